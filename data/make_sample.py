"""Writes sample.csv: short product-review sentences with a topic and a sentiment label.

The sentences are composed from hand-written fragments for three topics (electronics, food,
travel) and three sentiments (positive, neutral, negative); the seed makes the file reproducible.
Run: python data/make_sample.py
"""

import csv
import random
from pathlib import Path

SUBJECTS = {
    "electronics": ["the laptop", "this phone", "the headphones", "the charger", "my new tablet", "the keyboard",
                    "the smartwatch", "this speaker", "the camera", "the router", "the monitor", "the battery pack"],
    "food": ["the pasta", "the soup", "this bakery", "the sushi", "the coffee", "the burger", "the dessert menu",
             "the pizza", "the salad bar", "the curry", "the breakfast", "the steak"],
    "travel": ["the hotel", "our flight", "the train ride", "the beach resort", "the tour guide", "the hostel",
               "the airport lounge", "the cruise", "the rental car", "the city tour", "the check-in desk", "the campsite"],
}
DETAILS = {
    "electronics": ["the screen", "the battery life", "the sound", "the build quality", "the setup", "the software",
                    "the bluetooth pairing", "the charging speed"],
    "food": ["the flavour", "the portion size", "the service", "the price", "the seasoning", "the freshness",
             "the waiting time", "the presentation"],
    "travel": ["the room", "the staff", "the schedule", "the view", "the luggage handling", "the location",
               "the booking process", "the comfort"],
}
OPINIONS = {
    "positive": ["is excellent", "works perfectly", "exceeded my expectations", "is absolutely wonderful",
                 "was a real delight", "is worth every penny", "made me very happy", "is fantastic"],
    "neutral": ["is okay", "is about what I expected", "was fine, nothing special", "is average",
                "did the job", "was neither good nor bad", "is acceptable", "is pretty standard"],
    "negative": ["is terrible", "broke down quickly", "was a huge disappointment", "is awful",
                 "was a waste of money", "made me angry", "is really poor", "let me down badly"],
}
ENDINGS = {
    "positive": ["I would recommend it to anyone.", "I will definitely come back.", "Five stars from me.",
                 "Loved it.", ""],
    "neutral": ["I might try it again.", "Hard to say more.", "Three stars.", "It is what it is.", ""],
    "negative": ["I want a refund.", "Never again.", "Avoid it.", "One star is too many.", ""],
}
TEMPLATES = [
    "{S} {O}. {E}",
    "Honestly, {s} {o}. {E}",
    "{D} of {s} {o}. {E}",
    "I think {s} {o}, especially {d}. {E}",
    "After a week, {s} {o}. {E}",
]


def sentence(rng: random.Random, topic: str, sentiment: str) -> str:
    s = rng.choice(SUBJECTS[topic])
    d = rng.choice(DETAILS[topic])
    o = rng.choice(OPINIONS[sentiment])
    e = rng.choice(ENDINGS[sentiment])
    text = rng.choice(TEMPLATES).format(S=s.capitalize(), s=s, D=d.capitalize(), d=d, O=o, o=o, E=e)
    return text.strip()


def main(rows_per_cell: int = 40, seed: int = 7) -> None:
    rng = random.Random(seed)
    rows, seen = [], set()
    for topic in SUBJECTS:
        for sentiment in OPINIONS:
            while sum(1 for r in rows if r[1:] == [topic, sentiment]) < rows_per_cell:
                text = sentence(rng, topic, sentiment)
                if text not in seen:
                    seen.add(text)
                    rows.append([text, topic, sentiment])
    rng.shuffle(rows)
    out = Path(__file__).with_name("sample.csv")
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "class_label", "sentiment_label"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
