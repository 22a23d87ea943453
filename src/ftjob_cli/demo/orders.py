"""A deterministic chat dataset where fine-tuning visibly helps: turning a customer's order, written in
free text, into strict JSON with fixed keys (the guides' "consistent output format" case).

A base instruct model of 135M parameters answers in prose or malformed JSON; a few dozen LoRA steps
teach it the exact format. A few deliberately broken lines give the data report something to say.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

SYSTEM_PROMPT = 'Extract the order as JSON with keys "name", "city", "item", "color", "quantity".'

FIRST_NAMES = [
    "Maria",
    "John",
    "Aiko",
    "Lars",
    "Fatima",
    "Pedro",
    "Chen",
    "Olga",
    "Kwame",
    "Sofia",
    "Ravi",
    "Emma",
    "Hugo",
    "Leila",
    "Tom",
    "Ines",
    "Yusuf",
    "Nora",
    "Diego",
    "Hana",
    "Ivan",
    "Grace",
    "Omar",
    "Lea",
]
LAST_NAMES = [
    "Lopez",
    "Smith",
    "Tanaka",
    "Berg",
    "Haddad",
    "Silva",
    "Wang",
    "Petrova",
    "Mensah",
    "Rossi",
    "Patel",
    "Martin",
    "Dubois",
    "Karimi",
    "Baker",
    "Costa",
    "Demir",
    "Novak",
    "Garcia",
    "Kim",
    "Ivanov",
    "Lee",
]
CITIES = [
    "Lisbon",
    "Boston",
    "Osaka",
    "Oslo",
    "Beirut",
    "Porto",
    "Shanghai",
    "Kazan",
    "Accra",
    "Milan",
    "Pune",
    "Lyon",
    "Tehran",
    "Leeds",
    "Madrid",
    "Izmir",
    "Prague",
    "Seoul",
    "Denver",
    "Cork",
    "Nairobi",
    "Quito",
]
ITEMS = [
    "notebook",
    "mug",
    "backpack",
    "lamp",
    "umbrella",
    "scarf",
    "pen",
    "chair",
    "kettle",
    "towel",
    "clock",
    "vase",
]
COLORS = ["red", "blue", "green", "black", "white", "yellow", "grey", "orange", "purple", "brown"]
NUMBER_WORDS = [
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
]

TEMPLATES = [
    "Hi, I'm {name} from {city}. Please send me {qty} {color} {items}.",
    "{name} here, ordering {qty} {color} {items}, delivery to {city}.",
    "Could you ship {qty} {color} {items} to {city}? Thanks, {name}",
    "Order for {name} ({city}): {qty} x {color} {item}.",
    "I need {qty} {color} {items} in {city}. My name is {name}.",
    "Please deliver {qty} {color} {items} to {name} in {city}.",
    "From {city}: {name} would like {qty} {color} {items}.",
    "{name}, {city} - {qty} {color} {items}, please.",
]


def _plural(item: str, quantity: int) -> str:
    if quantity == 1:
        return item
    return item + ("es" if item.endswith(("sh", "ch", "s", "x")) else "s")


def make_order(rng: random.Random) -> dict[str, Any]:
    quantity = rng.randint(1, 12)
    return {
        "name": f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
        "city": rng.choice(CITIES),
        "item": rng.choice(ITEMS),
        "color": rng.choice(COLORS),
        "quantity": quantity,
    }


def order_example(order: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    quantity = order["quantity"]
    qty = NUMBER_WORDS[quantity - 1] if rng.random() < 0.4 else str(quantity)
    text = rng.choice(TEMPLATES).format(
        name=order["name"],
        city=order["city"],
        qty=qty,
        color=order["color"],
        item=order["item"],
        items=_plural(order["item"], quantity),
    )
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": text},
            {"role": "assistant", "content": json.dumps(order)},
        ]
    }


def generate_examples(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """`count` distinct, valid examples; the same seed always gives the same list."""
    rng = random.Random(seed)
    seen: set[str] = set()
    examples: list[dict[str, Any]] = []
    while len(examples) < count:
        example = order_example(make_order(rng), rng)
        key = example["messages"][1]["content"]
        if key not in seen:
            seen.add(key)
            examples.append(example)
    return examples


def defective_lines(valid: list[dict[str, Any]]) -> list[str]:
    """Lines a real export contains: each is caught by one check of the data report."""
    first, second = valid[0], valid[1]
    shouted = json.loads(json.dumps(first))
    shouted["messages"][1]["content"] = "  " + first["messages"][1]["content"].upper().replace(" ", "   ")
    prose = json.loads(json.dumps(second))
    prose["messages"][1]["content"] = "Send two mugs to Oslo for Lars Berg, the green ones."
    prose["messages"][2]["content"] = "Sure! Lars Berg in Oslo ordered two green mugs."
    return [
        '{"messages": [{"role": "user", "content": "truncated export',  # invalid JSON
        json.dumps(
            {"messages": [{"role": "customer", "content": "hi"}, {"role": "assistant", "content": "{}"}]}
        ),
        json.dumps({"messages": [{"role": "user", "content": "Three red pens to Cork, Emma Lee."}]}),
        json.dumps(
            {"messages": [{"role": "assistant", "content": "{}"}, {"role": "user", "content": "order?"}]}
        ),
        json.dumps(first),  # exact duplicate
        json.dumps(shouted),  # duplicate once case and whitespace are normalised
        json.dumps(prose),  # answer is prose, not JSON
    ]


def write_dataset(path: Path, count: int = 360, seed: int = 7) -> Path:
    """Write `count` valid examples with the defective lines spread through the file."""
    valid = generate_examples(count, seed)
    lines = [json.dumps(example) for example in valid]
    for offset, bad in enumerate(defective_lines(valid)):
        lines.insert(17 + offset * 41, bad)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
