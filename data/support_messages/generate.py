"""Write messages.csv: short customer-support messages with multi-label tags.

Run from the repository root: `python data/support_messages/generate.py`. Fixed seed, so the
file is reproducible. Every message is built from hand-written fragments (below): one or two
topic sentences (billing, technical, delivery), optionally an urgency phrase, and an
optional greeting and closing line. A message's labels are exactly the topics and urgency
it was built from.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

TOPICS = {
    "billing": [
        "I was charged twice for my last order",
        "my invoice shows the wrong amount",
        "please refund the payment for the cancelled subscription",
        "why did my card get billed again this month",
        "the discount code was not applied to my bill",
        "I need a copy of the receipt for my expenses",
        "you took money from my account without asking",
        "the price on the invoice is higher than on the website",
        "can you explain the extra fee on my statement",
        "my refund has still not reached my bank",
    ],
    "technical": [
        "the app crashes every time I open settings",
        "I cannot log in, the password reset link is broken",
        "the website shows an error 500 at checkout",
        "sync stopped working after the latest update",
        "the export button does nothing in the browser",
        "my device keeps disconnecting from the app",
        "pages load very slowly and then time out",
        "the two factor code never arrives",
        "the mobile app freezes on the loading screen",
        "uploading a photo fails with an unknown error",
    ],
    "delivery": [
        "my parcel has not arrived yet",
        "the tracking number does not work",
        "the package was delivered to the wrong address",
        "the box arrived damaged and items are missing",
        "delivery was promised for Monday and nothing came",
        "can I change the delivery address for my order",
        "the courier left my parcel outside in the rain",
        "the order status says shipped for ten days",
        "I received someone else's package",
        "when will my replacement item be shipped",
    ],
}
URGENT = [
    "please help as soon as possible",
    "this is urgent",
    "I need this fixed today",
    "this is the third time I am writing, answer now",
    "it is blocking my whole team",
    "urgent: I will cancel if this is not solved",
]
OPENERS = ["Hello,", "Hi team,", "Good morning,", "Dear support,", ""]
CLOSERS = [
    "Thanks in advance.",
    "Regards.",
    "Order number 48213.",
    "I have been a customer for years.",
    "",
]
LABELS = ["billing", "technical", "delivery", "urgent"]


def message(rng: random.Random) -> tuple[str, dict[str, int]]:
    topics = rng.sample(list(TOPICS), k=1 if rng.random() < 0.75 else 2)
    parts = [rng.choice(OPENERS)] + [rng.choice(TOPICS[t]).capitalize() + "." for t in topics]
    urgent = rng.random() < 0.3
    if urgent:
        parts.insert(rng.randint(1, len(parts)), rng.choice(URGENT).capitalize() + ".")
    parts.append(rng.choice(CLOSERS))
    text = " ".join(p for p in parts if p)
    return text, {label: int(label in topics or (label == "urgent" and urgent)) for label in LABELS}


def main(rows: int = 480, seed: int = 7) -> Path:
    rng = random.Random(seed)
    path = Path(__file__).with_name("messages.csv")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", *LABELS])
        for _ in range(rows):
            text, labels = message(rng)
            writer.writerow([text, *(labels[label] for label in LABELS)])
    return path


if __name__ == "__main__":
    print("wrote", main())
