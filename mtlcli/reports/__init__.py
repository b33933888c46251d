"""What a person reads about a run: learning curves in the terminal and as PNG (``plots``), the charts
of the HTML page (``charts``), the page itself (``html``) and its validation analysis (``validation``)."""
