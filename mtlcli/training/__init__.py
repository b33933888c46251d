"""Training: the loop, the policies beside it, and the function that sets a run up."""
