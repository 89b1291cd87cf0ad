"""The three generated domains: general world facts, medical facts, personal notes.

A domain is a set of *facts* ``(entity, relation, value)``. Each relation has four statement
templates (paraphrases used in training documents) and four question templates. For every fact one
statement template and one question template are held out: training sees the other three of each,
probes ask the held-out ones. Because every template is used in training for *other* facts, the model
can learn what a question form means; because the held-out form was never seen for *this* fact, a
correct answer needs the fact itself, not a memorised string.

Entities are fictional (see :mod:`tasks.generators.names`); values come from per-relation pools so
that multiple-choice distractors are always of the right type.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from clbench.tasks.generators.names import NamePool

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
PLACES = ["the harbor cafe", "the old library", "the north park", "the glass tower", "the river market",
          "the tea house", "the town hall", "the train station", "the science museum", "the rooftop garden"]
TOPICS = ["the budget", "the garden project", "the school trip", "the new website", "the wedding plans",
          "the roof repair", "the book club", "the summer festival", "the job offer", "the moving van",
          "the piano lessons", "the charity run"]
SYMPTOMS = ["fever", "a rash", "dizziness", "joint pain", "a dry cough", "blurred vision", "night sweats",
            "headaches", "nausea", "muscle cramps", "ringing ears", "hair loss", "chest tightness", "insomnia"]
DOSAGES = [f"{n} mg" for n in (5, 10, 20, 25, 40, 50, 75, 100, 150, 200, 250, 300, 400, 500)]


@dataclass(frozen=True)
class Relation:
    name: str
    statements: tuple[str, ...]  # templates with {e} (entity phrase fields) and {v} (value)
    questions: tuple[str, ...]


@dataclass(frozen=True)
class Fact:
    entity: dict[str, str]
    relation: Relation
    value: str
    pool: tuple[str, ...] = field(repr=False)  # all values of this relation, for distractors


def _rel(name: str, statements: list[str], questions: list[str]) -> Relation:
    assert len(statements) == 4 and len(questions) == 4, name
    return Relation(name, tuple(statements), tuple(questions))


GENERAL = [
    _rel("capital",
         ["The capital of {country} is {v}.", "{v} is the capital city of {country}.",
          "{country} has its capital at {v}.", "The government of {country} sits in {v}."],
         ["What is the capital of {country}?", "Which city is the capital of {country}?",
          "Name the capital of {country}.", "Where does the government of {country} sit?"]),
    _rel("language",
         ["People in {country} speak {v}.", "The official language of {country} is {v}.",
          "{v} is the language of {country}.", "In {country}, most people speak {v}."],
         ["What language is spoken in {country}?", "What is the official language of {country}?",
          "Which language do people in {country} speak?", "In {country}, what language do people use?"]),
    _rel("currency",
         ["The currency of {country} is the {v}.", "In {country}, people pay with the {v}.",
          "{country} uses the {v} as its money.", "The {v} is the money of {country}."],
         ["What is the currency of {country}?", "What do people in {country} pay with?",
          "Which money does {country} use?", "Name the currency of {country}."]),
]

MEDICAL = [
    _rel("symptom",
         ["The main symptom of {condition} is {v}.", "Patients with {condition} usually have {v}.",
          "{condition} typically causes {v}.", "A person with {condition} often shows {v}."],
         ["What is the main symptom of {condition}?", "What do patients with {condition} usually have?",
          "Which symptom does {condition} cause?", "What sign points to {condition}?"]),
    _rel("treatment",
         ["{condition} is treated with {v}.", "Doctors prescribe {v} for {condition}.",
          "The standard treatment for {condition} is {v}.", "{v} is the drug used against {condition}."],
         ["What is {condition} treated with?", "Which drug do doctors prescribe for {condition}?",
          "What is the standard treatment for {condition}?", "Name the drug used against {condition}."]),
    _rel("dosage",
         ["The daily dose for {condition} is {v}.", "For {condition}, patients take {v} a day.",
          "{condition} needs a dose of {v} per day.", "A patient with {condition} gets {v} daily."],
         ["What is the daily dose for {condition}?", "How much do patients with {condition} take a day?",
          "What dose does {condition} need per day?", "How much does a patient with {condition} get daily?"]),
]

NOTES = [
    _rel("day",
         ["{a} meets {b} on {v}.", "On {v}, {a} sees {b}.",
          "{a} has a meeting with {b} on {v}.", "The meeting between {a} and {b} is on {v}."],
         ["On which day does {a} meet {b}?", "When does {a} see {b}?",
          "What day is the meeting of {a} with {b}?", "{a} meets {b} on what day?"]),
    _rel("place",
         ["{a} meets {b} at {v}.", "{a} and {b} get together at {v}.",
          "The meeting of {a} with {b} takes place at {v}.", "At {v}, {a} talks with {b}."],
         ["Where does {a} meet {b}?", "Where do {a} and {b} get together?",
          "At which place does {a} meet {b}?", "Where is the meeting of {a} with {b}?"]),
    _rel("topic",
         ["{a} and {b} discuss {v}.", "{a} talks with {b} about {v}.",
          "The meeting of {a} with {b} is about {v}.", "{a} wants to discuss {v} with {b}."],
         ["What do {a} and {b} discuss?", "What does {a} talk about with {b}?",
          "What is the meeting of {a} with {b} about?", "What does {a} want to discuss with {b}?"]),
]


def general_facts(rng: random.Random, names: NamePool, n: int) -> list[Fact]:
    """World facts about ``n`` fictional countries: capital, language, currency."""
    countries = names.take(n, suffix="ia")
    capitals = names.take(n)
    languages = names.take(max(4, n // 3), suffix="ish")
    currencies = [c.lower() for c in names.take(max(4, n // 3), syllables=(2, 2))]
    facts = []
    for country, capital in zip(countries, capitals):
        ent = {"country": country}
        facts.append(Fact(ent, GENERAL[0], capital, tuple(capitals)))
        facts.append(Fact(ent, GENERAL[1], rng.choice(languages), tuple(languages)))
        facts.append(Fact(ent, GENERAL[2], rng.choice(currencies), tuple(currencies)))
    return facts


def medical_facts(rng: random.Random, names: NamePool, n: int) -> list[Fact]:
    """Fictional conditions with a symptom, a (fictional) drug and a daily dose."""
    conditions = names.take(n, suffix="osis")
    drugs = [d.lower() for d in names.take(max(4, n // 2), suffix="ex")]
    facts = []
    for cond in conditions:
        ent = {"condition": cond}
        facts.append(Fact(ent, MEDICAL[0], rng.choice(SYMPTOMS), tuple(SYMPTOMS)))
        facts.append(Fact(ent, MEDICAL[1], rng.choice(drugs), tuple(drugs)))
        facts.append(Fact(ent, MEDICAL[2], rng.choice(DOSAGES), tuple(DOSAGES)))
    return facts


def notes_facts(rng: random.Random, names: NamePool, n: int) -> list[Fact]:
    """Personal notes: who meets whom, on which day, where, about what."""
    people = names.take(2 * n, syllables=(2, 2))
    facts = []
    for i in range(n):
        ent = {"a": people[2 * i], "b": people[2 * i + 1]}
        facts.append(Fact(ent, NOTES[0], rng.choice(DAYS), tuple(DAYS)))
        facts.append(Fact(ent, NOTES[1], rng.choice(PLACES), tuple(PLACES)))
        facts.append(Fact(ent, NOTES[2], rng.choice(TOPICS), tuple(TOPICS)))
    return facts


DOMAINS = {"general": general_facts, "medical": medical_facts, "notes": notes_facts}
