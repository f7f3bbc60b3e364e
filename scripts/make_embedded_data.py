#!/usr/bin/env python3
"""Generate the small synthetic datasets shipped in ``solar/embedded/data/``.

Each file mirrors the schema of a real hub dataset (pretraining corpus,
instruction-tuning sources, preference sources, MATH-style data and six
lm-evaluation-harness benchmarks), but the content is a tiny, coherent world of
simple TRUE facts: capitals, continents, planets, animals, states of matter,
colours, opposites, the calendar, units and arithmetic.  The same facts are
stated in the corpus, taught in the instruction/preference data and tested by
the eval sets (with different phrasings), so training a tiny model on them can
actually move the eval scores.

Deterministic and rerunnable: every output file uses its own
``random.Random`` seeded from ``SEED`` and the file name, so
``python3 scripts/make_embedded_data.py`` rewrites byte-identical files.
Standard library only.
"""
from __future__ import annotations

import json
import random
import re
from fractions import Fraction
from math import comb, factorial, gcd
from pathlib import Path

SEED = 107
OUT = Path(__file__).resolve().parents[1] / "solar" / "embedded" / "data"

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def rng(name: str) -> random.Random:
    return random.Random(f"{SEED}:{name}")  # str seeds are hashed with sha512: stable

def cap(s: str) -> str:
    return s[:1].upper() + s[1:]

def bare(country: str) -> str:
    return country[4:] if country.startswith("the ") else country

def an(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" or word.startswith("hour") else "a ") + word

def join_and(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

def para(r: random.Random, head: str, rest: list, lo: int = 1, hi: int = 4) -> str:
    """First sentence, then lo..hi of the remaining sentences in random order."""
    rest = list(rest)
    r.shuffle(rest)
    return " ".join([head] + rest[: r.randint(lo, min(hi, len(rest)))])

def balanced(r: random.Random, n: int, k: int) -> list:
    """Correct-answer positions: as uniform as possible, in shuffled order."""
    pos = [i % k for i in range(n)]
    r.shuffle(pos)
    return pos

def place(correct, wrong, pos: int) -> list:
    out = list(wrong)
    out.insert(pos, correct)
    return out

def tidy(x):
    """Avoid 'Washington, D.C..' when a sentence ends on the abbreviation."""
    if isinstance(x, str):
        return x.replace("D.C..", "D.C.")
    if isinstance(x, list):
        return [tidy(v) for v in x]
    if isinstance(x, dict):
        return {k: tidy(v) for k, v in x.items()}
    return x

def write_jsonl(rel: str, rows: list, keys: list) -> None:
    path = OUT / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            assert list(row) == keys, (rel, list(row))
            f.write(json.dumps(tidy(row), ensure_ascii=False) + "\n")

# ---------------------------------------------------------------------------
# The world: facts
# ---------------------------------------------------------------------------

COUNTRIES = [  # (country, capital, continent or region, two big cities that are NOT the capital)
    ("France", "Paris", "Europe", ("Lyon", "Marseille")),
    ("Germany", "Berlin", "Europe", ("Munich", "Hamburg")),
    ("Italy", "Rome", "Europe", ("Milan", "Naples")),
    ("Spain", "Madrid", "Europe", ("Barcelona", "Seville")),
    ("Portugal", "Lisbon", "Europe", ("Porto", "Braga")),
    ("the United Kingdom", "London", "Europe", ("Manchester", "Birmingham")),
    ("Ireland", "Dublin", "Europe", ("Cork", "Galway")),
    ("Norway", "Oslo", "Europe", ("Bergen", "Trondheim")),
    ("Sweden", "Stockholm", "Europe", ("Gothenburg", "Malmö")),
    ("Finland", "Helsinki", "Europe", ("Turku", "Tampere")),
    ("Denmark", "Copenhagen", "Europe", ("Aarhus", "Odense")),
    ("Poland", "Warsaw", "Europe", ("Kraków", "Gdańsk")),
    ("Greece", "Athens", "Europe", ("Thessaloniki", "Patras")),
    ("Austria", "Vienna", "Europe", ("Salzburg", "Graz")),
    ("Belgium", "Brussels", "Europe", ("Antwerp", "Ghent")),
    ("Hungary", "Budapest", "Europe", ("Debrecen", "Szeged")),
    ("Japan", "Tokyo", "Asia", ("Osaka", "Kyoto")),
    ("China", "Beijing", "Asia", ("Shanghai", "Guangzhou")),
    ("India", "New Delhi", "Asia", ("Mumbai", "Kolkata")),
    ("South Korea", "Seoul", "Asia", ("Busan", "Incheon")),
    ("Thailand", "Bangkok", "Asia", ("Chiang Mai", "Pattaya")),
    ("Vietnam", "Hanoi", "Asia", ("Ho Chi Minh City", "Da Nang")),
    ("the Philippines", "Manila", "Asia", ("Cebu City", "Davao City")),
    ("Egypt", "Cairo", "Africa", ("Alexandria", "Giza")),
    ("Kenya", "Nairobi", "Africa", ("Mombasa", "Kisumu")),
    ("Nigeria", "Abuja", "Africa", ("Lagos", "Kano")),
    ("Ghana", "Accra", "Africa", ("Kumasi", "Tamale")),
    ("Morocco", "Rabat", "Africa", ("Casablanca", "Marrakesh")),
    ("Ethiopia", "Addis Ababa", "Africa", ("Dire Dawa", "Gondar")),
    ("Canada", "Ottawa", "North America", ("Toronto", "Vancouver")),
    ("Mexico", "Mexico City", "North America", ("Guadalajara", "Monterrey")),
    ("the United States", "Washington, D.C.", "North America", ("New York City", "Los Angeles")),
    ("Cuba", "Havana", "North America", ("Santiago de Cuba", "Camagüey")),
    ("Brazil", "Brasília", "South America", ("Rio de Janeiro", "São Paulo")),
    ("Argentina", "Buenos Aires", "South America", ("Córdoba", "Rosario")),
    ("Peru", "Lima", "South America", ("Cusco", "Arequipa")),
    ("Chile", "Santiago", "South America", ("Concepción", "Antofagasta")),
    ("Colombia", "Bogotá", "South America", ("Medellín", "Cali")),
    ("Australia", "Canberra", "Oceania", ("Sydney", "Melbourne")),
    ("New Zealand", "Wellington", "Oceania", ("Auckland", "Christchurch")),
]
# Continent questions skip "Oceania" (a region; the continent itself is usually called Australia).
# Egypt is left out too: it is in Africa, but its Sinai peninsula is in Asia.
CONTINENT_COUNTRIES = [c for c in COUNTRIES if c[2] != "Oceania" and c[0] != "Egypt"]
CONTINENTS = ["Africa", "Antarctica", "Asia", "Australia", "Europe", "North America", "South America"]
MAIN_CONTINENTS = ["Africa", "Asia", "Europe", "North America", "South America"]

PLANETS = ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]
ORD = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
PLANET_NOTES = {
    "Mercury": "Mercury is the smallest planet, and it is the closest planet to the Sun.",
    "Venus": "Venus is the hottest planet, because its thick atmosphere traps heat.",
    "Earth": "Earth is the planet we live on, and it has one moon.",
    "Mars": "Mars is called the Red Planet because of its reddish dust.",
    "Jupiter": "Jupiter is the largest planet in the solar system.",
    "Saturn": "Saturn is famous for its bright rings made of ice and rock.",
    "Uranus": "Uranus is a cold planet that spins on its side.",
    "Neptune": "Neptune is the planet farthest from the Sun.",
}

ANIMALS = [  # (name, plural, class, diet or None, food)
    ("cow", "cows", "mammal", "herbivore", "grass"),
    ("horse", "horses", "mammal", "herbivore", "grass and hay"),
    ("sheep", "sheep", "mammal", "herbivore", "grass"),
    ("rabbit", "rabbits", "mammal", "herbivore", "grass and leafy plants"),
    ("elephant", "elephants", "mammal", "herbivore", "grass, leaves and fruit"),
    ("giraffe", "giraffes", "mammal", "herbivore", "leaves from tall trees"),
    ("lion", "lions", "mammal", "carnivore", "meat from animals such as zebras"),
    ("tiger", "tigers", "mammal", "carnivore", "meat from animals such as deer"),
    ("wolf", "wolves", "mammal", "carnivore", "meat from animals such as deer"),
    ("bear", "bears", "mammal", "omnivore", "berries, roots, fish and honey"),
    ("monkey", "monkeys", "mammal", "omnivore", "fruit, leaves and insects"),
    ("whale", "whales", "mammal", None, "krill and small fish"),
    ("dolphin", "dolphins", "mammal", "carnivore", "fish and squid"),
    ("bat", "bats", "mammal", None, "insects or fruit"),
    ("eagle", "eagles", "bird", "carnivore", "fish and small animals such as rabbits"),
    ("owl", "owls", "bird", "carnivore", "mice and other small animals"),
    ("penguin", "penguins", "bird", "carnivore", "fish and krill"),
    ("parrot", "parrots", "bird", None, "seeds, nuts and fruit"),
    ("chicken", "chickens", "bird", "omnivore", "seeds, grain and insects"),
    ("snake", "snakes", "reptile", "carnivore", "mice, frogs and eggs"),
    ("crocodile", "crocodiles", "reptile", "carnivore", "fish and other animals"),
    ("tortoise", "tortoises", "reptile", "herbivore", "grass, leaves and flowers"),
    ("gecko", "geckos", "reptile", None, "insects"),
    ("shark", "sharks", "fish", "carnivore", "fish, seals and other sea animals"),
    ("salmon", "salmon", "fish", "carnivore", "insects, shrimp and smaller fish"),
    ("goldfish", "goldfish", "fish", "omnivore", "fish flakes, water plants and tiny insects"),
]
CLASSES = ["mammal", "bird", "reptile", "fish"]
CLASS_PL = {"mammal": "mammals", "bird": "birds", "reptile": "reptiles", "fish": "fish"}
CLASS_FACTS = {
    "mammal": ["Mammals have hair or fur.", "Mammals feed their babies with milk.", "Mammals breathe air with lungs."],
    "bird": ["Birds have feathers and wings.", "Birds lay eggs with hard shells.", "Birds have beaks instead of teeth."],
    "reptile": ["Reptiles have dry, scaly skin.", "Most reptiles lay eggs on land.", "Reptiles are cold-blooded."],
    "fish": ["Fish live in water.", "Fish breathe with gills.", "Most fish have scales and fins."],
}
ANIMAL_NOTES = {
    "whale": "A whale lives in the sea, but it is a mammal, not a fish.",
    "dolphin": "Dolphins live in the sea and breathe air, but they are mammals, not fish.",
    "bat": "Bats can fly, but they are mammals, not birds.",
    "penguin": "Penguins cannot fly, but they are still birds.",
    "shark": "A shark is a fish, not a mammal.",
}
DIET_DEF = {"herbivore": "eats plants", "carnivore": "eats meat", "omnivore": "eats both plants and meat"}

STATES = {
    "solid": ["ice", "rock", "wood", "iron", "a brick", "a coin", "a stone"],
    "liquid": ["water", "milk", "juice", "honey", "olive oil", "lemonade"],
    "gas": ["steam", "air", "oxygen", "helium", "water vapour", "carbon dioxide"],
}
STATE_DEF = {
    "solid": "A solid keeps its own shape.",
    "liquid": "A liquid flows and takes the shape of its container.",
    "gas": "A gas spreads out to fill all the space it is in.",
}
PHASES = [  # (name, from, to, example)
    ("melting", "a solid", "a liquid", "Ice turning into water on a warm day"),
    ("freezing", "a liquid", "a solid", "Water turning into ice in a freezer"),
    ("evaporation", "a liquid", "a gas", "A puddle drying up in the sun"),
    ("condensation", "a gas", "a liquid", "Drops of water forming on a cold glass"),
]

COLOURS = [("grass", "green"), ("the sky on a clear day", "blue"), ("snow", "white"), ("a ripe banana", "yellow"),
           ("coal", "black"), ("a ripe tomato", "red"), ("a carrot", "orange"), ("milk", "white"),
           ("a lemon", "yellow"), ("a ripe strawberry", "red"), ("chocolate", "brown"), ("a pumpkin", "orange"),
           ("a crow", "black"), ("a lime", "green"), ("a polar bear's fur", "white")]
COLOUR_NAMES = ["red", "orange", "yellow", "green", "blue", "purple", "white", "black", "brown", "pink"]
MIXES = [("red", "yellow", "orange"), ("blue", "yellow", "green"), ("red", "blue", "purple"),
         ("red", "white", "pink"), ("black", "white", "grey")]

OPPOSITES = [("hot", "cold"), ("big", "small"), ("up", "down"), ("day", "night"), ("fast", "slow"),
             ("happy", "sad"), ("open", "closed"), ("light", "dark"), ("tall", "short"), ("full", "empty"),
             ("wet", "dry"), ("early", "late"), ("left", "right"), ("loud", "quiet"), ("hard", "soft"),
             ("push", "pull"), ("win", "lose"), ("first", "last"), ("above", "below"), ("inside", "outside"),
             ("strong", "weak"), ("thick", "thin"), ("always", "never"), ("buy", "sell"), ("young", "old")]

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
MONTH_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]

UNITS = [  # (big, big plural, small plural, how many small in one big)
    ("metre", "metres", "centimetres", 100), ("kilometre", "kilometres", "metres", 1000),
    ("centimetre", "centimetres", "millimetres", 10), ("kilogram", "kilograms", "grams", 1000),
    ("litre", "litres", "millilitres", 1000), ("hour", "hours", "minutes", 60),
    ("minute", "minutes", "seconds", 60), ("day", "days", "hours", 24), ("week", "weeks", "days", 7),
    ("year", "years", "months", 12), ("century", "centuries", "years", 100), ("decade", "decades", "years", 10),
]

# (topic, question, short answer, correct sentence, wrong sentence)
FIXED = [
    ("space", "Which planet is the largest in the solar system?", "Jupiter", "Jupiter is the largest planet in the solar system.", "Saturn is the largest planet in the solar system."),
    ("space", "Which planet is closest to the Sun?", "Mercury", "Mercury is the planet closest to the Sun.", "Venus is the planet closest to the Sun."),
    ("space", "Which planet is called the Red Planet?", "Mars", "Mars is called the Red Planet because of its reddish dust.", "Jupiter is called the Red Planet."),
    ("space", "Which planet is the hottest?", "Venus", "Venus is the hottest planet, because its thick atmosphere traps heat.", "Mercury is the hottest planet because it is closest to the Sun."),
    ("space", "Which planet is famous for its rings?", "Saturn", "Saturn is famous for its bright rings of ice and rock.", "Mars is famous for its rings."),
    ("space", "Which planet is farthest from the Sun?", "Neptune", "Neptune is the planet farthest from the Sun.", "Pluto is the planet farthest from the Sun."),
    ("space", "How many planets are in the solar system?", "eight", "There are eight planets in the solar system. Pluto is now called a dwarf planet.", "There are nine planets in the solar system."),
    ("space", "Is the Sun a planet or a star?", "a star", "The Sun is a star, not a planet.", "The Sun is a planet."),
    ("space", "What does the Moon travel around?", "the Earth", "The Moon travels around the Earth.", "The Moon travels around Mars."),
    ("space", "How long does the Earth take to go around the Sun?", "about 365 days", "The Earth takes about 365 days, which is one year, to go around the Sun.", "The Earth takes 24 hours to go around the Sun."),
    ("space", "What causes day and night?", "the Earth spinning", "Day and night happen because the Earth spins once every 24 hours.", "Day and night happen because the Sun goes around the Earth every day."),
    ("matter", "At what temperature does water boil at sea level?", "100 degrees Celsius", "At sea level, water boils at 100 degrees Celsius.", "At sea level, water boils at 50 degrees Celsius."),
    ("matter", "At what temperature does water freeze?", "0 degrees Celsius", "Water freezes at 0 degrees Celsius.", "Water freezes at 10 degrees Celsius."),
    ("matter", "What is it called when a solid turns into a liquid?", "melting", "When a solid turns into a liquid, it is called melting.", "When a solid turns into a liquid, it is called freezing."),
    ("matter", "What is it called when a liquid turns into a solid?", "freezing", "When a liquid turns into a solid, it is called freezing.", "When a liquid turns into a solid, it is called boiling."),
    ("matter", "What is it called when a liquid turns into a gas?", "evaporation", "When a liquid turns into a gas, it is called evaporation.", "When a liquid turns into a gas, it is called condensation."),
    ("matter", "What is it called when a gas turns into a liquid?", "condensation", "When a gas turns into a liquid, it is called condensation.", "When a gas turns into a liquid, it is called melting."),
    ("life", "What do plants need to grow?", "sunlight, water and air", "Plants need sunlight, water and air to grow.", "Plants only need darkness to grow."),
    ("life", "What gas do plants give off?", "oxygen", "Plants take in carbon dioxide and give off oxygen.", "Plants take in oxygen and give off helium."),
    ("life", "What gas do people need to breathe in?", "oxygen", "People breathe in oxygen and breathe out carbon dioxide.", "People breathe in helium and breathe out oxygen."),
    ("life", "How many legs does an insect have?", "six", "An insect has six legs.", "An insect has eight legs."),
    ("life", "How many legs does a spider have?", "eight", "A spider has eight legs, so it is not an insect.", "A spider has six legs, so it is an insect."),
    ("life", "What does the heart do?", "it pumps blood", "The heart pumps blood around the body.", "The heart helps you to see."),
    ("life", "Is a whale a fish?", "no", "No. A whale lives in the sea, but it is a mammal, not a fish.", "Yes, a whale is a fish because it lives in water."),
    ("life", "Is a bat a bird?", "no", "No. Bats can fly, but they are mammals, not birds.", "Yes, a bat is a bird because it can fly."),
    ("life", "Is a penguin a bird?", "yes", "Yes. Penguins cannot fly, but they have feathers and lay eggs, so they are birds.", "No, a penguin is not a bird because it cannot fly."),
    ("science", "What do magnets attract?", "iron", "Magnets attract things made of iron.", "Magnets attract wood and paper."),
    ("science", "Why do we see lightning before we hear thunder?", "light is faster than sound", "Light travels much faster than sound, so we see lightning before we hear thunder.", "Thunder comes later because it is heavier than lightning."),
    ("science", "What pulls things down towards the ground?", "gravity", "Gravity pulls things down towards the ground.", "Magnetism pulls everything down towards the ground."),
    ("earth", "What is the largest ocean?", "the Pacific Ocean", "The Pacific Ocean is the largest ocean on Earth.", "The Atlantic Ocean is the largest ocean on Earth."),
    ("earth", "What is the highest mountain above sea level?", "Mount Everest", "Mount Everest is the highest mountain above sea level.", "Mont Blanc is the highest mountain above sea level."),
    ("earth", "What is the largest continent?", "Asia", "Asia is the largest continent.", "Europe is the largest continent."),
    ("earth", "How many continents are there?", "seven", "There are seven continents: " + join_and(CONTINENTS) + ".", "There are five continents."),
    ("numbers", "What is any number multiplied by zero?", "zero", "Any number multiplied by zero is zero.", "Any number multiplied by zero stays the same."),
    ("numbers", "What is any number multiplied by one?", "the same number", "Any number multiplied by one stays the same.", "Any number multiplied by one is zero."),
    ("calendar", "How many days are in a week?", "seven", "There are seven days in a week.", "There are five days in a week."),
    ("calendar", "How many months are in a year?", "twelve", "There are twelve months in a year.", "There are ten months in a year."),
    ("calendar", "How many months have at least 28 days?", "all twelve", "Every month has at least 28 days, so all twelve months do.", "Only February has 28 days."),
    ("calendar", "How many days does February have?", "28, or 29 in a leap year", "February has 28 days, or 29 days in a leap year.", "February always has 30 days."),
    ("everyday", "What do you use to stay dry in the rain?", "an umbrella", "People use an umbrella to stay dry in the rain.", "People use a spoon to stay dry in the rain."),
    ("everyday", "What do you use to cut paper?", "scissors", "You cut paper with a pair of scissors.", "You cut paper with a pillow."),
    ("everyday", "What do you use to open a locked door?", "a key", "You open a locked door with a key.", "You open a locked door with a banana."),
    ("everyday", "What should you do before you cross a road?", "look both ways", "Before you cross a road, you should look both ways.", "Before you cross a road, you should close your eyes."),
    ("everyday", "What happens to ice cream left in the hot sun?", "it melts", "Ice cream left in the hot sun melts.", "Ice cream left in the hot sun freezes harder."),
    ("everyday", "What should you drink when you are thirsty?", "water", "When you are thirsty, you should drink water.", "When you are thirsty, you should eat sand."),
    ("everyday", "Where do people usually sleep at night?", "in a bed", "At night, people usually sleep in a bed.", "At night, people usually sleep in the bath."),
    ("everyday", "What do you clean your teeth with?", "a toothbrush and toothpaste", "You clean your teeth with a toothbrush and toothpaste.", "You clean your teeth with a hammer."),
    ("everyday", "What should you wear when it is cold outside?", "a warm coat", "When it is cold outside, you should wear a warm coat.", "When it is cold outside, you should wear only a swimsuit."),
    ("everyday", "What do you use to dry yourself after a shower?", "a towel", "After a shower, you dry yourself with a towel.", "After a shower, you dry yourself with a bucket of water."),
]

COMMONSENSE = [
    "People open an umbrella when it rains so that they stay dry.",
    "To cook pasta, you heat water in a pot until it boils and then add the pasta.",
    "Plants with dry soil need to be watered, or their leaves start to droop.",
    "A person who is taller can reach higher shelves than a person who is shorter.",
    "The fastest runner in a race usually wins it.",
    "Someone who has just eaten a big meal is usually not hungry.",
    "People lend things to friends who have forgotten their own.",
    "A student who is good at math can help a friend who finds math hard.",
    "People who feel cold put on warm clothes such as a coat, a hat and gloves.",
    "A good swimmer can teach someone who is afraid of the water.",
    "Someone who gets up early has time to eat breakfast before leaving.",
    "A strong person can carry heavy boxes more easily than a weak person.",
    "A big object cannot fit into a smaller container.",
    "When a room is dark, you switch on the light so that you can see.",
    "When the phone rings, you pick it up and say hello.",
    "After a meal, dirty plates are washed with soap and warm water.",
    "Dirty clothes are cleaned in a washing machine with soap.",
    "A flat bicycle tyre can be fixed by pumping air into it.",
    "A kite rises into the sky when the wind is blowing.",
    "To make tea, you pour hot water over a tea bag in a cup.",
    "At a shop, you take the things you want to the checkout and pay for them.",
    "When people are tired at night, they go to bed and sleep.",
    "A dog eats its food from a bowl on the floor.",
    "When it snows, people wear warm coats, hats and gloves.",
    "People sing happy birthday when a birthday cake with candles is brought to the table.",
    "Swimmers wear goggles so that they can see under the water.",
    "You dry yourself with a towel after a shower or a bath.",
    "People brush their hair to make it neat.",
]

NAMES = [("Maria", "she"), ("Tom", "he"), ("Aisha", "she"), ("Ben", "he"), ("Lena", "she"), ("Omar", "he"),
         ("Sara", "she"), ("Leo", "he"), ("Mia", "she"), ("Sam", "he"), ("Nina", "she"), ("Jack", "he"),
         ("Emma", "she"), ("Ravi", "he"), ("Chloe", "she"), ("Kofi", "he"), ("Hana", "she"), ("Luis", "he")]
PRON = {"she": ("she", "her", "her"), "he": ("he", "him", "his")}

# ---------------------------------------------------------------------------
# Word problems: a tiny template language with gsm8k-style calculator notes
# ---------------------------------------------------------------------------
# vars: (lo, hi) -> randint, [..] -> choice, "expr" -> derived from earlier vars.
# steps: (label, expr, text); "{calc}" becomes "3*4 = <<3*4=12>>12".

TRAIN_WP = [
    dict(q="{n} has {a} marbles. {P} buys {b} bags of marbles with {c} marbles in each bag. How many marbles does {p} have now?",
         rq="{n} starts with {a} marbles and then buys {b} bags that each hold {c} marbles. What is the total number of marbles {p} has?",
         vars={"a": (3, 40), "b": (2, 9), "c": (3, 12)}, fobar="a",
         steps=[("m", "b*c", "{P} buys {calc} new marbles."), ("t", "a+m", "Now {p} has {calc} marbles.")]),
    dict(q="{n} baked {tot} cookies. {P} kept {k} of them and shared the rest equally among {f} friends. How many cookies did each friend get?",
         rq="After baking {tot} cookies, {n} keeps {k} and divides the others equally among {f} friends. How many cookies does each friend receive?",
         vars={"f": (2, 8), "e": (2, 12), "k": (1, 9), "tot": "f*e+k"},
         steps=[("s", "tot-k", "{n} shared {calc} cookies."), ("x", "s/f", "Each friend got {calc} cookies.")]),
    dict(q="{n} buys {a} notebooks that cost ${c1} each and a pen that costs ${c2}. {P} pays with a $50 bill. How much change does {p} get?",
         rq="Notebooks cost ${c1} each and a pen costs ${c2}. If {n} buys {a} notebooks and one pen and pays with a $50 bill, how much change does {p} receive?",
         vars={"a": (2, 5), "c1": (2, 8), "c2": (1, 5)},
         steps=[("nb", "a*c1", "The notebooks cost {calc} dollars."), ("c", "nb+c2", "Altogether {p} spends {calc} dollars."),
                ("ch", "50-c", "{P} gets {calc} dollars in change.")]),
    dict(q="{n} reads {pg} pages of a book every day. How many pages does {p} read in {w} weeks?",
         rq="If {n} reads {pg} pages each day, how many pages will {p} have read after {w} weeks?",
         vars={"pg": (5, 30), "w": (2, 5)},
         steps=[("d", "w*7", "There are 7 days in a week, so {w} weeks is {calc} days."), ("t", "d*pg", "{n} reads {calc} pages.")]),
    dict(q="A farm has {cows} cows and {sheep} sheep. The farmer sells {sold} of the sheep. How many animals are left on the farm?",
         rq="There are {cows} cows and {sheep} sheep on a farm. If {sold} sheep are sold, how many animals remain?",
         vars={"cows": (10, 40), "sheep": (10, 50), "sold": (2, 9)}, fobar="cows",
         steps=[("s", "sheep-sold", "There are {calc} sheep left."), ("t", "cows+s", "The farm now has {calc} animals.")]),
    dict(q="{n} practised the piano for {h} hours and {m} minutes. How many minutes did {p} practise in total?",
         rq="How many minutes in total did {n} spend practising the piano if {p} played for {h} hours and {m} minutes?",
         vars={"h": (2, 4), "m": (5, 55)}, fobar="m",
         steps=[("hm", "h*60", "There are 60 minutes in an hour, so {h} hours is {calc} minutes."), ("t", "hm+m", "In total {p} practised {calc} minutes.")]),
    dict(q="{n} buys {d} dozen eggs and uses {u} of them to bake cakes. How many eggs are left?",
         rq="If {n} buys {d} dozen eggs and bakes cakes with {u} of them, how many eggs remain?",
         vars={"d": (2, 6), "u": (3, 20)},
         steps=[("e", "d*12", "A dozen is 12 eggs, so {d} dozen is {calc} eggs."), ("l", "e-u", "There are {calc} eggs left.")]),
    dict(q="A rope is {mm} metres long. {n} cuts it into pieces that are each {pc} centimetres long. How many pieces does {p} get?",
         rq="{n} has a rope that is {mm} metres long and cuts it into {pc}-centimetre pieces. How many pieces are there?",
         vars={"mm": (2, 9), "pc": [10, 20, 25, 50]},
         steps=[("cm", "mm*100", "There are 100 centimetres in a metre, so the rope is {calc} centimetres long."), ("k", "cm/pc", "{n} gets {calc} pieces.")]),
]

EVAL_WP = [  # gsm8k only: different stories, same skills
    dict(q="{n} collects stickers. {P} had {a} stickers, got {b} packs with {c} stickers in each pack for {ps} birthday, and then gave {g} stickers to {ps} little brother. How many stickers does {n} have now?",
         vars={"a": (5, 30), "b": (2, 6), "c": (4, 10), "g": (2, 9)},
         steps=[("m", "b*c", "The packs held {calc} stickers."), ("h", "a+m", "After {ps} birthday {n} had {calc} stickers."),
                ("t", "h-g", "After giving some away, {p} has {calc} stickers.")]),
    dict(q="A baker makes {t} trays of muffins with {m} muffins on each tray. By noon the baker has sold {s} muffins. How many muffins are still for sale?",
         vars={"t": (3, 8), "m": (6, 12), "s": (5, 17)},
         steps=[("tot", "t*m", "The baker made {calc} muffins."), ("l", "tot-s", "There are {calc} muffins still for sale.")]),
    dict(q="A bus leaves the station with {a} passengers. At the first stop {off} people get off and {on} people get on. At the second stop {on2} more people get on. How many passengers are on the bus now?",
         vars={"a": (20, 45), "off": (3, 15), "on": (2, 12), "on2": (1, 10)},
         steps=[("x", "a-off", "After {off} people get off, there are {calc} passengers."), ("y", "x+on", "Then {on} people get on, making {calc} passengers."),
                ("z", "y+on2", "At the second stop the number rises to {calc} passengers.")]),
    dict(q="{n} already has ${a} in a piggy bank and saves ${s} more every week. How much money will {p} have after {w} weeks?",
         vars={"a": (5, 40), "s": (3, 15), "w": (3, 10)},
         steps=[("sv", "s*w", "In {w} weeks {p} saves {calc} dollars."), ("t", "a+sv", "{P} will have {calc} dollars.")]),
    dict(q="{n} plants {rw} rows of tomato plants with {k} plants in each row. Each plant grows {f} tomatoes. How many tomatoes does {n} pick in total?",
         vars={"rw": (2, 6), "k": (3, 8), "f": (2, 9)},
         steps=[("pl", "rw*k", "There are {calc} tomato plants."), ("t", "pl*f", "{n} picks {calc} tomatoes.")]),
    dict(q="{n} walks the dog for {m} minutes every day. How many hours does {p} spend walking the dog in {d} days?",
         vars={"hrs": (2, 6), "m": [15, 20, 30], "d": "hrs*60/m"},
         steps=[("t", "m*d", "In {d} days {p} walks for {calc} minutes."), ("h", "t/60", "There are 60 minutes in an hour, so that is {calc} hours.")]),
    dict(q="{n} buys {bx} boxes of pencils with {s} pencils in each box and shares all the pencils equally among {k} students. How many pencils does each student get?",
         vars={"k": (2, 6), "x": (2, 5), "bx": (2, 4), "s": "k*x"},
         steps=[("t", "bx*s", "There are {calc} pencils in total."), ("e", "t/k", "Each student gets {calc} pencils.")]),
]

def _subst(expr: str, vals: dict) -> str:
    return re.sub(r"[A-Za-z_]\w*", lambda m: str(vals[m.group()]), expr)

def _calc(expr: str):
    v = eval(expr, {"__builtins__": {}})  # our own arithmetic strings only
    return int(v) if v == int(v) and v > 0 else None

def make_wp(r: random.Random, tpl: dict, fobar: bool = False) -> dict:
    name, g = r.choice(NAMES)
    p, o, ps = PRON[g]
    while True:
        vals, ok = {}, True
        for k, spec in tpl["vars"].items():
            vals[k] = r.randint(*spec) if isinstance(spec, tuple) else r.choice(spec) if isinstance(spec, list) \
                else _calc(_subst(spec, vals))
        ctx = dict(vals, n=name, p=p, P=cap(p), o=o, ps=ps)
        ann, plain = [], []
        for label, expr, text in tpl["steps"]:
            nums = _subst(expr, vals)
            v = _calc(nums)
            if v is None:
                ok = False
                break
            vals[label] = v
            ann.append(text.format(calc=f"{nums} = <<{nums}={v}>>{v}", **ctx))
            plain.append(text.format(calc=f"{nums} = {v}", **ctx))
        if ok:
            break
    out = dict(question=tpl["q"].format(**ctx), rephrase=tpl.get("rq", tpl["q"]).format(**ctx),
               ann=ann, plain=plain, answer=vals[tpl["steps"][-1][0]])
    if fobar:
        var = tpl["fobar"]
        out["fobar_q"] = tpl["q"].format(**dict(ctx, **{var: "x"}))
        out["x"], out["rest"] = vals[var], out["answer"] - vals[var]
    return out

# ---------------------------------------------------------------------------
# MATH-style problems (problem, rephrase, solution with \boxed{}, answer)
# ---------------------------------------------------------------------------

def box(x) -> str:
    return "\\boxed{" + str(x) + "}"

def tex(fr: Fraction) -> str:
    return str(fr.numerator) if fr.denominator == 1 else "\\frac{%d}{%d}" % (fr.numerator, fr.denominator)

def factor_tex(n: int) -> tuple:
    f, d, m = {}, 2, n
    while m > 1:
        while m % d == 0:
            f[d] = f.get(d, 0) + 1
            m //= d
        d += 1
    return f, " \\cdot ".join(str(q) if e == 1 else "%d^%d" % (q, e) for q, e in f.items())

def mrow(typ, level, problem, rephrase, solution, answer) -> dict:
    return dict(type=typ, level="Level %d" % level, problem=problem, rephrase=rephrase, solution=solution, answer=str(answer))

def m_linear(r):
    a, x, b = r.randint(2, 9), r.randint(-6, 15), r.randint(1, 25)
    eq = "%dx + %d = %d" % (a, b, a * x + b)
    return mrow("Algebra", 1 if x >= 0 else 2, "Solve for $x$: $%s$." % eq, "What value of $x$ satisfies the equation $%s$?" % eq,
                "Subtracting $%d$ from both sides gives $%dx = %d$. Dividing both sides by $%d$ gives $x = %s$." % (b, a, a * x, a, box(x)), x)

def m_evaluate(r):
    x, b = r.randint(2, 9), r.randint(1, 9)
    v = x * x + b * x
    return mrow("Algebra", 1, "Evaluate $x^2 + %dx$ when $x = %d$." % (b, x), "If $x = %d$, what is the value of $x^2 + %dx$?" % (x, b),
                "Substituting $x = %d$ gives $%d^2 + %d \\cdot %d = %d + %d = %s$." % (x, x, b, x, x * x, b * x, box(v)), v)

def m_system(r):
    x = r.randint(10, 40)
    y = r.randint(1, x - 1)
    s, d = x + y, x - y
    q = "The sum of two numbers is $%d$ and their difference is $%d$. What is the larger of the two numbers?" % (s, d)
    return mrow("Algebra", 2, q, "Two numbers add up to $%d$ and differ by $%d$. Find the larger number." % (s, d),
                "Let the numbers be $x$ and $y$ with $x > y$. Then $x + y = %d$ and $x - y = %d$. Adding the two equations gives $2x = %d$, so $x = %s$."
                % (s, d, s + d, box(x)), x)

def m_series(r):
    n = r.randint(5, 60)
    s = n * (n + 1) // 2
    return mrow("Algebra", 2, "What is the sum of all the integers from 1 to $%d$?" % n, "Compute $1 + 2 + 3 + \\cdots + %d$." % n,
                "The sum of the first $n$ positive integers is $\\frac{n(n+1)}{2}$. For $n = %d$ this is $\\frac{%d \\cdot %d}{2} = %s$." % (n, n, n + 1, box(s)), s)

def m_frac_add(r):
    b, d = r.sample(range(2, 10), 2)
    a, c = r.randint(1, b - 1), r.randint(1, d - 1)
    L = b * d // gcd(b, d)
    tot = Fraction(a, b) + Fraction(c, d)
    raw = "\\frac{%d}{%d}" % (a * L // b + c * L // d, L)
    end = "$%s = %s$." % (raw, box(tex(tot))) if tex(tot) != raw else "$%s$." % box(raw)
    q = "Find $\\frac{%d}{%d} + \\frac{%d}{%d}$. Express your answer as a common fraction in simplest form." % (a, b, c, d)
    return mrow("Prealgebra", 2, q, "What is the sum of $\\frac{%d}{%d}$ and $\\frac{%d}{%d}$, written in simplest form?" % (a, b, c, d),
                "The least common denominator of $%d$ and $%d$ is $%d$. We have $\\frac{%d}{%d} = \\frac{%d}{%d}$ and $\\frac{%d}{%d} = \\frac{%d}{%d}$, so the sum is "
                % (b, d, L, a, b, a * L // b, L, c, d, c * L // d, L) + end, tex(tot))

def m_percent(r):
    p, n = r.choice([10, 20, 25, 50, 75]), 20 * r.randint(1, 20)
    v = p * n // 100
    return mrow("Prealgebra", 1, "What is $%d\\%%$ of $%d$?" % (p, n), "Find $%d$ percent of $%d$." % (p, n),
                "$%d\\%%$ of $%d$ is $\\frac{%d}{100} \\cdot %d = %s$." % (p, n, p, n, box(v)), v)

def m_simplify(r):
    g, x, y = r.randint(2, 12), r.randint(1, 9), r.randint(2, 12)
    if gcd(x, y) != 1:
        return m_simplify(r)
    return mrow("Prealgebra", 1, "Simplify $\\frac{%d}{%d}$." % (g * x, g * y), "Write $\\frac{%d}{%d}$ in lowest terms." % (g * x, g * y),
                "The greatest common divisor of $%d$ and $%d$ is $%d$, so $\\frac{%d}{%d} = \\frac{%d \\div %d}{%d \\div %d} = %s$."
                % (g * x, g * y, g, g * x, g * y, g * x, g, g * y, g, box(tex(Fraction(x, y)))), tex(Fraction(x, y)))

def m_gcd_lcm(r):
    g, x, y = r.randint(2, 15), r.randint(2, 9), r.randint(2, 9)
    if gcd(x, y) != 1:
        return m_gcd_lcm(r)
    a, b = g * x, g * y
    fa, fb = factor_tex(a)[1], factor_tex(b)[1]
    if r.random() < 0.5:
        return mrow("Number Theory", 2, "What is the greatest common divisor of $%d$ and $%d$?" % (a, b), "Find $\\gcd(%d, %d)$." % (a, b),
                    "We factor: $%d = %s$ and $%d = %s$. Taking the smallest power of each common prime gives $\\gcd(%d, %d) = %s$."
                    % (a, fa, b, fb, a, b, box(g)), g)
    v = g * x * y
    return mrow("Number Theory", 3, "What is the least common multiple of $%d$ and $%d$?" % (a, b), "Find the smallest positive integer that is a multiple of both $%d$ and $%d$." % (a, b),
                "We factor: $%d = %s$ and $%d = %s$. Taking the largest power of each prime that appears gives $\\operatorname{lcm}(%d, %d) = %s = %s$."
                % (a, fa, b, fb, a, b, factor_tex(v)[1], box(v)), v)

def m_remainder(r):
    n, d = r.randint(100, 2000), r.randint(3, 12)
    q, rem = divmod(n, d)
    return mrow("Number Theory", 1, "What is the remainder when $%d$ is divided by $%d$?" % (n, d), "Find the remainder of $%d$ divided by $%d$." % (n, d),
                "Since $%d \\cdot %d = %d$ and $%d - %d = %d$, the remainder is $%s$." % (d, q, d * q, n, d * q, rem, box(rem)), rem)

def m_divisors(r):
    n = r.randint(12, 120)
    f, ft = factor_tex(n)
    if len(f) == 1 and list(f.values())[0] == 1:
        return m_divisors(r)
    cnt = 1
    for e in f.values():
        cnt *= e + 1
    prod = "".join("(%d+1)" % e for e in f.values())
    return mrow("Number Theory", 3, "How many positive divisors does $%d$ have?" % n, "Find the number of positive integers that divide $%d$." % n,
                "The prime factorization of $%d$ is $%s$. The number of positive divisors is $%s = %s$." % (n, ft, prod, box(cnt)), cnt)

def m_choose(r):
    n = r.randint(4, 12)
    k = r.randint(2, n - 2)
    v = comb(n, k)
    return mrow("Counting & Probability", 2, "Compute $\\dbinom{%d}{%d}$." % (n, k), "In how many ways can $%d$ people be chosen from a group of $%d$?" % (k, n),
                "$\\dbinom{%d}{%d} = \\dfrac{%d!}{%d!\\,%d!} = %s$." % (n, k, n, k, n - k, box(v)), v)

def m_arrange(r):
    n, thing = r.randint(3, 8), r.choice(["books", "flags", "toy cars", "paintings"])
    return mrow("Counting & Probability", 1 if n < 5 else 2, "In how many ways can $%d$ different %s be arranged in a row?" % (n, thing),
                "How many different orders are there for $%d$ distinct %s placed in a line?" % (n, thing),
                "There are $%d$ choices for the first spot, $%d$ for the second, and so on, so there are $%d! = %s$ arrangements." % (n, n - 1, n, box(factorial(n))), factorial(n))

def m_probability(r):
    if r.random() < 0.5:
        k = r.randint(1, 4)
        pr = Fraction(6 - k, 6)
        raw = "\\frac{%d}{6}" % (6 - k)
        end = "$%s = %s$." % (raw, box(tex(pr))) if tex(pr) != raw else "$%s$." % box(raw)
        return mrow("Counting & Probability", 2, "A fair six-sided die is rolled. What is the probability that the number rolled is greater than $%d$? Express your answer as a common fraction." % k,
                    "What is the probability of rolling a number larger than $%d$ on a fair six-sided die?" % k,
                    "The numbers greater than $%d$ are %s, which is $%d$ of the $6$ equally likely outcomes, so the probability is " % (k, join_and([str(i) for i in range(k + 1, 7)]), 6 - k) + end, tex(pr))
    n = r.randint(2, 6)
    return mrow("Counting & Probability", 2, "A fair coin is flipped $%d$ times. What is the probability that every flip lands heads? Express your answer as a common fraction." % n,
                "What is the probability of getting heads on all $%d$ flips of a fair coin?" % n,
                "Each flip is heads with probability $\\frac{1}{2}$, so the probability is $\\left(\\frac{1}{2}\\right)^%d = %s$." % (n, box("\\frac{1}{%d}" % 2 ** n)), "\\frac{1}{%d}" % 2 ** n)

def m_geometry(r):
    kind = r.randrange(5)
    if kind == 0:
        l, w = r.randint(2, 20), r.randint(2, 20)
        return mrow("Geometry", 1, "A rectangle has length $%d$ units and width $%d$ units. What is its area, in square units?" % (l, w),
                    "Find the area of a $%d$ by $%d$ rectangle." % (l, w), "The area is length times width: $%d \\cdot %d = %s$." % (l, w, box(l * w)), l * w)
    if kind == 1:
        l, w = r.randint(2, 20), r.randint(2, 20)
        return mrow("Geometry", 1, "What is the perimeter, in units, of a rectangle with length $%d$ units and width $%d$ units?" % (l, w),
                    "Find the perimeter of a $%d$ by $%d$ rectangle." % (l, w), "The perimeter is $2(%d + %d) = 2 \\cdot %d = %s$." % (l, w, l + w, box(2 * (l + w))), 2 * (l + w))
    if kind == 2:
        (a, b, c), k = r.choice([(3, 4, 5), (5, 12, 13), (8, 15, 17), (7, 24, 25)]), r.randint(1, 4)
        a, b, c = a * k, b * k, c * k
        return mrow("Geometry", 2, "A right triangle has legs of length $%d$ and $%d$. What is the length of its hypotenuse?" % (a, b),
                    "The two shorter sides of a right triangle are $%d$ and $%d$. How long is the longest side?" % (a, b),
                    "By the Pythagorean Theorem, the hypotenuse is $\\sqrt{%d^2 + %d^2} = \\sqrt{%d} = %s$." % (a, b, c * c, box(c)), c)
    if kind == 3:
        a, b = r.randint(20, 90), r.randint(20, 70)
        return mrow("Geometry", 1, "Two angles of a triangle measure $%d^\\circ$ and $%d^\\circ$. What is the measure, in degrees, of the third angle?" % (a, b),
                    "A triangle has angles of $%d^\\circ$ and $%d^\\circ$. How many degrees is its third angle?" % (a, b),
                    "The angles of a triangle add up to $180^\\circ$, so the third angle is $180 - %d - %d = %s$." % (a, b, box(180 - a - b)), 180 - a - b)
    rad = r.randint(2, 12)
    return mrow("Geometry", 2, "A circle has radius $%d$. What is its area? Express your answer in terms of $\\pi$." % rad,
                "What is the area of a circle whose radius is $%d$, in terms of $\\pi$?" % rad,
                "The area of a circle is $\\pi r^2 = \\pi \\cdot %d^2 = %s$." % (rad, box("%d\\pi" % (rad * rad))), "%d\\pi" % (rad * rad))

MATH_GENS = [(m_linear, 5), (m_evaluate, 2), (m_system, 2), (m_series, 2), (m_frac_add, 3), (m_percent, 2), (m_simplify, 2),
             (m_gcd_lcm, 3), (m_remainder, 2), (m_divisors, 2), (m_choose, 2), (m_arrange, 1), (m_probability, 2), (m_geometry, 5)]

def make_math(r):
    gens, ws = zip(*MATH_GENS)
    return r.choices(gens, ws)[0](r)

# ---------------------------------------------------------------------------
# Corpus paragraphs
# ---------------------------------------------------------------------------

def para_country(r, row=None):
    c, k, cont, oth = row or r.choice(COUNTRIES)
    x = r.choice([y for y in COUNTRIES if y[2] == cont and y[0] != c])
    head = r.choice(["{k} is the capital of {c}.", "The capital of {c} is {k}.", "The capital city of {c} is {k}."]).format(k=k, c=c)
    rest = [r.choice(["{C} is a country in {cont}.", "{C} is located in {cont}."]).format(C=cap(c), cont=cont),
            f"{oth[0]} and {oth[1]} are large cities in {c}, but the capital is {k}.",
            f"Another country in {cont} is {x[0]}, and its capital is {x[1]}.",
            r.choice([f"{x[3][0]} is a large city in {x[0]}, but it is not the capital.", f"{cap(x[0])} is also in {cont}."]),
            f"People who travel to {c} often visit {k}, its capital."]
    return para(r, cap(head), rest, 3, 5)

def para_continent(r):
    cont = r.choice(MAIN_CONTINENTS)
    cs = r.sample([c for c in COUNTRIES if c[2] == cont], 3)
    head = "There are seven continents: " + join_and(CONTINENTS) + "."
    rest = ["Asia is the largest continent.", f"{cap(join_and([c[0] for c in cs]))} are countries in {cont}.",
            f"The capital of {cs[0][0]} is {cs[0][1]}.", "The Pacific Ocean is the largest ocean on Earth.",
            "Mount Everest, in Asia, is the highest mountain above sea level."]
    return para(r, head, rest, 2, 4)

def para_planet(r, i=None):
    i = r.randrange(8) if i is None else i
    p = PLANETS[i]
    head = r.choice([f"{p} is the {ORD[i]} planet from the Sun.", f"Counting outward from the Sun, {p} is planet number {i + 1}.",
                     f"In order from the Sun, {p} comes {ORD[i]}."])
    rest = [PLANET_NOTES[p], "There are eight planets in the solar system.", "The planets in order from the Sun are " + join_and(PLANETS) + "."]
    if 0 < i < 7:
        rest.append(f"{p} comes after {PLANETS[i - 1]} and before {PLANETS[i + 1]}.")
    rest.append(f"The planet after {p} is {PLANETS[i + 1]}." if i < 7 else "Neptune is the last of the eight planets.")
    return para(r, head, rest, 2, 4)

def para_space(r):
    fs = [f[3] for f in FIXED if f[0] == "space"]
    return para(r, "The Sun is a star at the centre of our solar system.", fs, 3, 5)

def para_animal(r, row=None):
    name, pl, cls, diet, food = row or r.choice(ANIMALS)
    head = r.choice([f"The {name} is {an(cls)}.", f"{cap(an(name))} is {an(cls)}.", f"{cap(pl)} are {CLASS_PL[cls]}."])
    other = r.choice([a for a in ANIMALS if a[2] == cls and a[0] != name])
    y = r.choice([a for a in ANIMALS if a[2] != cls])
    rest = r.sample(CLASS_FACTS[cls], 2) + [f"{cap(an(name))} eats {food}.", f"The {other[0]} is also {an(cls)}.",
                                            f"Unlike the {name}, the {y[0]} is {an(y[2])}."]
    if diet:
        rest.append(f"The {name} is {an(diet)}, which means it {DIET_DEF[diet]}.")
    if name in ANIMAL_NOTES:
        rest.append(ANIMAL_NOTES[name])
    return para(r, head, rest, 3, 5)

def para_matter(r):
    state = r.choice(list(STATES))
    things = r.sample(STATES[state], 2)
    ph = r.choice(PHASES)
    head = f"{cap(things[0])} is {an(state)}."
    rest = [STATE_DEF[state], f"{cap(things[1])} is also {an(state)}.", "Ice is solid water, and steam is water as a gas.",
            "Water boils at 100 degrees Celsius at sea level.", "Water freezes at 0 degrees Celsius.",
            f"When {ph[1]} turns into {ph[2]}, it is called {ph[0]}. {ph[3]} is an example of {ph[0]}."]
    return para(r, head, rest, 3, 4)

def para_colour(r):
    items = r.sample(COLOURS, 6)
    sents = [r.choice(["{T} is {c}.", "The colour of {t} is {c}."]).format(T=cap(t), t=t, c=c) for t, c in items]
    a, b, c = r.choice(MIXES)
    sents.append(r.choice([f"Mixing {a} and {b} paint makes {c}.", f"If you mix {a} paint with {b} paint, you get {c}."]))
    return para(r, sents[0], sents[1:], 3, 5)

def para_opposite(r):
    sents = []
    for a, b in r.sample(OPPOSITES, 6):
        if r.random() < 0.5:
            a, b = b, a
        sents.append(r.choice([f"The opposite of {a} is {b}.", f"{cap(a)} and {b} are opposites.", f"{cap(a)} is the opposite of {b}.",
                               f'The words "{a}" and "{b}" have opposite meanings.']))
    return para(r, sents[0], sents[1:], 3, 5)

def para_calendar(r):
    if r.random() < 0.5:
        i = r.randrange(7)
        d, nx, pv = DAYS[i], DAYS[(i + 1) % 7], DAYS[i - 1]
        head = "The days of the week are " + join_and(DAYS) + "."
        rest = ["There are seven days in a week.", f"The day after {d} is {nx}.", f"The day before {d} is {pv}.",
                f"{d} comes between {pv} and {nx}.", "Saturday and Sunday are called the weekend."]
    else:
        i = r.randrange(12)
        m, nx = MONTHS[i], MONTHS[(i + 1) % 12]
        days = "February has 28 days, or 29 days in a leap year." if i == 1 else f"{m} has {MONTH_DAYS[i]} days."
        head = r.choice(["There are twelve months in a year.", "A year has twelve months, from January to December."])
        rest = [f"{m} is month number {i + 1}.", f"The month after {m} is {nx}.", days, "Every month has at least 28 days.",
                f"The month before {nx} is {m}."]
    return para(r, head, rest, 3, 4)

def para_units(r):
    out = []
    for big, bigs, smalls, n in r.sample(UNITS, 2):
        k = r.randint(2, 9)
        head = r.choice([f"There are {n} {smalls} in {an(big)}.", f"One {big} is equal to {n} {smalls}."])
        rest = [f"So {k} {bigs} is the same as {k * n} {smalls}.", f"To change {bigs} into {smalls}, multiply by {n}.",
                f"{k * n} {smalls} make {k} {bigs}."]
        out.append(para(r, head, rest, 2, 2))
    return " ".join(out)

def para_add(r):
    a, b = r.randint(10, 99), r.randint(10, 99)
    ta, oa, tb, ob = a // 10 * 10, a % 10, b // 10 * 10, b % 10
    if r.random() < 0.6:
        return (f"To add {a} and {b}, first add the tens: {ta} plus {tb} is {ta + tb}. Then add the ones: {oa} plus {ob} is {oa + ob}. "
                f"Finally, {ta + tb} plus {oa + ob} is {a + b}. So {a} + {b} = {a + b}. "
                f"You can check the answer by subtracting: {a + b} minus {b} is {a}.")
    pairs = [(r.randint(1, 50), r.randint(1, 50)) for _ in range(r.randint(4, 6))]
    return "Here are some sums. " + " ".join(f"{x} plus {y} equals {x + y}." for x, y in pairs)

def para_sub(r):
    a = r.randint(20, 99)
    b = r.randint(2, a - 1)
    thing = r.choice(["coins", "apples", "stamps", "beads", "pencils"])
    return para(r, f"{a} minus {b} is {a - b}.", [f"We can check this by adding: {a - b} plus {b} is {a}.", f"So {a} - {b} = {a - b}.",
                                                   f"If you have {a} {thing} and give away {b}, you have {a - b} {thing} left.",
                                                   f"Taking away {b} from {a} leaves {a - b}.",
                                                   f"Counting back {b} from {a} brings you to {a - b}."], 3, 4)

def para_mul(r):
    kind = r.randrange(3)
    if kind == 0:
        n, top = r.randint(2, 12), 10
        return f"The {n} times table: " + ", ".join(f"{n} times {k} is {n * k}" for k in range(1, top + 1)) + "."
    if kind == 1:
        a, b = r.randint(11, 99), r.randint(2, 9)
        t, o = a // 10 * 10, a % 10
        return (f"To multiply {a} by {b}, multiply {t} by {b} to get {t * b}, then multiply {o} by {b} to get {o * b}. "
                f"Adding them gives {t * b} plus {o * b}, which is {a * b}. So {a} × {b} = {a * b}. "
                f"Multiplying in the other order gives the same answer: {b} × {a} = {a * b}.")
    a, b = r.randint(2, 6), r.randint(2, 9)
    return (f"Multiplication is repeated addition. {a} times {b} means " + " + ".join([str(b)] * a) + f", which is {a * b}. "
            f"So {a} × {b} = {a * b}, and {b} × {a} = {a * b} too.")

def para_wp(r):
    w = make_wp(r, r.choice(TRAIN_WP))
    return f"Problem: {w['question']} Solution: " + " ".join(w["plain"]) + f" The answer is {w['answer']}."

def para_math(r):
    m = make_math(r)
    return f"Problem: {m['problem']} Solution: {m['solution']}"

def para_facts(r):
    topic = r.choice(["matter", "life", "science", "earth", "numbers", "calendar", "everyday"])
    fs = [f[3] for f in FIXED if f[0] == topic]
    return para(r, fs[0], fs[1:], 3, 5) if len(fs) > 3 else " ".join(fs)

def para_commonsense(r):
    s = r.sample(COMMONSENSE, 6)
    return para(r, s[0], s[1:], 2, 5)

def para_qa(r):
    its = [train_qa(r) for _ in range(r.randint(2, 3))]
    return " ".join(f"Question: {it['q']} Answer: {it['expl']}" for it in its if it["fam"] != "wp")

PARAS = [(para_country, 16), (para_continent, 4), (para_planet, 7), (para_space, 5), (para_animal, 12), (para_matter, 6),
         (para_colour, 3), (para_opposite, 3), (para_calendar, 6), (para_units, 6), (para_add, 4), (para_sub, 3),
         (para_mul, 5), (para_wp, 12), (para_math, 6), (para_facts, 7), (para_commonsense, 10), (para_qa, 12)]

def build_corpus():
    r = rng("corpus")
    fns, ws = zip(*PARAS)
    rows, seen = [], set()
    n_sent = lambda t: len(re.findall(r"[.?!](?:\s|$)", t))
    while len(rows) < 2500:
        fn = r.choices(fns, ws)[0]
        t = fn(r)
        while t and len(t) < 300:  # short paragraph: add a second one of the same family (max 6 sentences)
            t2 = fn(r)
            if n_sent(t) + n_sent(t2) > 6:
                break
            t += " " + t2
        if t and t not in seen:
            seen.add(t)
            rows.append({"text": t})
    write_jsonl("corpus.jsonl", rows, ["text"])

# ---------------------------------------------------------------------------
# Training question bank (instruction / preference sources share it)
# ---------------------------------------------------------------------------

def item(fam, q, a, expl, wrong, extra="", opts=None, inst=None, inp=None) -> dict:
    return dict(fam=fam, q=q, a=str(a), expl=expl, wrong=wrong, extra=extra, opts=opts, inst=inst, inp=inp)

def qa_capital(r):
    c, k, cont, oth = r.choice(COUNTRIES)
    q = r.choice(["What is the capital of {c}?", "Name the capital city of {c}.", "Tell me the capital of {c}."]).format(c=c)
    expl = r.choice(["The capital of {c} is {k}.", "{k} is the capital city of {c}."]).format(c=c, k=k)
    opts = [oth[0]] + r.sample([x[1] for x in COUNTRIES if x[1] != k], 2)
    return item("capital", q, k, cap(expl), f"The capital of {c} is {r.choice(oth)}.", f"{cap(c)} is a country in {cont}.",
                opts, "Name the capital city of the given country.", bare(c))

def qa_continent(r):
    c, k, cont, _ = r.choice(CONTINENT_COUNTRIES)
    q = r.choice(["On which continent is {c}?", "Which continent is {c} in?"]).format(c=c)
    wrong = [x for x in MAIN_CONTINENTS if x != cont]
    return item("continent", q, cont, f"{cap(c)} is in {cont}.", f"{cap(c)} is in {r.choice(wrong)}.", f"Its capital is {k}.",
                r.sample(wrong, 3), "Name the continent where the given country is located.", bare(c))

def qa_class(r):
    name, pl, cls, diet, food = r.choice(ANIMALS)
    q = r.choice([f"Is {an(name)} a mammal, a bird, a reptile or a fish?", f"What kind of animal is {an(name)}: a mammal, a bird, a reptile or a fish?",
                  f"Which animal group does the {name} belong to?"])
    other = [c for c in CLASSES if c != cls]
    expl = f"{cap(an(name))} is {an(cls)}." + (" " + ANIMAL_NOTES[name] if name in ANIMAL_NOTES else "")
    return item("class", q, cls, expl, f"{cap(an(name))} is {an(r.choice(other))}.", r.choice(CLASS_FACTS[cls]), other,
                "Classify the animal as a mammal, bird, reptile or fish.", name)

def qa_food(r):
    name, pl, cls, diet, food = r.choice(ANIMALS)
    meat = any(w in food for w in ("meat", "fish", "insects", "krill", "mice"))
    words = lambda f: set(re.findall(r"[a-z]+", f)) - {"and", "or", "such", "as", "from", "other", "small", "animals", "only"}
    pool = [a[4] for a in ANIMALS if a[3] == ("herbivore" if meat else "carnivore") and not words(a[4]) & words(food)]
    wrong = "only meat from large animals such as zebras" if diet == "omnivore" else r.choice(pool)
    q = r.choice([f"What does {an(name)} eat?", f"What food does {an(name)} eat?", f"What do {pl} eat?"])
    extra = f"That makes it {an(diet)}: it {DIET_DEF[diet]}." if diet else r.choice(CLASS_FACTS[cls])
    return item("food", q, food, f"{cap(an(name))} eats {food}.", f"{cap(an(name))} eats {wrong}.", extra,
                r.sample([f for f in pool if f != wrong], 2) + [wrong])

def qa_diet(r):
    name, pl, cls, diet, food = r.choice([a for a in ANIMALS if a[3]])
    other = [d for d in DIET_DEF if d != diet]
    q = r.choice([f"Is {an(name)} a herbivore, a carnivore or an omnivore?", f"Is the {name} a plant eater, a meat eater or both?"])
    return item("diet", q, diet, f"{cap(an(name))} is {an(diet)}: it {DIET_DEF[diet]}.", f"{cap(an(name))} is {an(r.choice(other))}.",
                f"{cap(pl)} eat {food}.", other, "Say whether the animal is a herbivore, a carnivore or an omnivore.", name)

def qa_planet(r):
    i = r.randrange(8)
    p, o = PLANETS[i], ORD[i]
    wrong_i = r.choice([j for j in range(8) if j != i])
    extra = "The planets in order from the Sun are " + join_and(PLANETS) + "."
    if r.random() < 0.5:
        q = r.choice([f"Which planet is {o} from the Sun?", f"Name the {o} planet from the Sun."])
        return item("planet", q, p, f"{p} is the {o} planet from the Sun.", f"{PLANETS[wrong_i]} is the {o} planet from the Sun.",
                    extra, [PLANETS[j] for j in r.sample([j for j in range(8) if j != i], 3)])
    q = r.choice([f"What position is {p} in, counting from the Sun?", f"Counting from the Sun, which number planet is {p}?"])
    return item("planet", q, o, f"{p} is the {o} planet from the Sun.", f"{p} is the {ORD[wrong_i]} planet from the Sun.", PLANET_NOTES[p],
                [ORD[j] for j in r.sample([j for j in range(8) if j != i], 3)])

def qa_matter(r):
    state = r.choice(list(STATES))
    thing = r.choice(STATES[state])
    other = [s for s in STATES if s != state]
    return item("matter", f"Is {thing} a solid, a liquid or a gas?", state, f"{cap(thing)} is {an(state)}.",
                f"{cap(thing)} is {an(r.choice(other))}.", STATE_DEF[state], other, "Say whether the substance is a solid, a liquid or a gas.", thing)

def qa_colour(r):
    if r.random() < 0.3:
        a, b, c = r.choice(MIXES)
        wrong = [x for x in COLOUR_NAMES if x not in (a, b, c)]
        return item("colour", f"What colour do you get when you mix {a} and {b} paint?", c, f"Mixing {a} and {b} paint gives {c}.",
                    f"Mixing {a} and {b} paint gives {r.choice(wrong)}.", "", r.sample(wrong, 3))
    t, c = r.choice(COLOURS)
    wrong = [x for x in COLOUR_NAMES if x != c]
    return item("colour", r.choice([f"What colour is {t}?", f"What is the colour of {t}?"]), c, f"{cap(t)} is {c}.",
                f"{cap(t)} is {r.choice(wrong)}.", "", r.sample(wrong, 3), "Name the usual colour of the given thing.", t)

def qa_opposite(r):
    a, b = r.choice(OPPOSITES)
    if r.random() < 0.5:
        a, b = b, a
    wrong = [w for pair in OPPOSITES for w in pair if w not in (a, b)]
    q = r.choice([f'What is the opposite of "{a}"?', f'Give the opposite of the word "{a}".', f"What word means the opposite of {a}?"])
    return item("opposite", q, b, f'The opposite of "{a}" is "{b}".', f'The opposite of "{a}" is "{r.choice(wrong)}".', "",
                r.sample(wrong, 3), "Write the opposite of the given word.", a)

def qa_calendar(r):
    kind = r.randrange(4)
    if kind < 2:
        i = r.randrange(7)
        d, j = DAYS[i], (i + 1) % 7 if kind == 0 else (i - 1) % 7
        rel = "after" if kind == 0 else "before"
        wrong = [x for x in DAYS if x not in (d, DAYS[j])]
        return item("calendar", f"What day comes {rel} {d}?", DAYS[j], f"The day {rel} {d} is {DAYS[j]}.",
                    f"The day {rel} {d} is {r.choice(wrong)}.", "There are seven days in a week.", r.sample(wrong, 3))
    i = r.choice([k for k in range(12) if k != 1])
    m = MONTHS[i]
    if kind == 2:
        nx = MONTHS[(i + 1) % 12]
        wrong = [x for x in MONTHS if x not in (m, nx)]
        return item("calendar", f"What month comes after {m}?", nx, f"The month after {m} is {nx}.", f"The month after {m} is {r.choice(wrong)}.",
                    "There are twelve months in a year.", r.sample(wrong, 3))
    n = MONTH_DAYS[i]
    return item("calendar", f"How many days are there in {m}?", n, f"{m} has {n} days.", f"{m} has {61 - n} days.",
                "Every month has at least 28 days.", [str(61 - n), "28", "29"])

def qa_units(r):
    big, bigs, smalls, n = r.choice(UNITS)
    k = r.choice([1, 1, 2, 3, 4, 5])
    f = r.choice([x for x in (10, 100, 1000, 60, 24, 12, 7) if x != n])
    what = an(big) if k == 1 else f"{k} {bigs}"
    q = r.choice([f"How many {smalls} are in {what}?", f"How many {smalls} make {what}?"])
    return item("units", q, k * n, f"There are {k * n} {smalls} in {what}.", f"There are {k * f} {smalls} in {what}.",
                f"One {big} is {n} {smalls}.", [str(x) for x in r.sample(sorted({k * x for x in (10, 100, 1000, 60, 24, 12, 7)} - {k * n}), 3)],
                "Convert the measurement.", f"{k} {big if k == 1 else bigs} to {smalls}")

def qa_arith(r):
    op = r.randrange(3)
    if op == 0:
        a, b = r.randint(2, 99), r.randint(2, 99)
        v, sym, word = a + b, "+", r.choice(["plus", "added to"])
    elif op == 1:
        a = r.randint(10, 99)
        b = r.randint(1, a - 1)
        v, sym, word = a - b, "-", "minus"
    else:
        a, b = r.randint(2, 12), r.randint(2, 12)
        v, sym, word = a * b, "×", "times"
    bad = v + r.choice([-10, -2, -1, 1, 2, 10]) if v > 10 else v + r.choice([1, 2])
    q = r.choice([f"What is {a} {sym} {b}?", f"What is {a} {word} {b}?", f"Calculate {a} {sym} {b}."])
    return item("arith", q, v, f"{a} {sym} {b} = {v}.", f"{a} {sym} {b} = {bad}.", "", [str(bad), str(v + 3), str(abs(v - 5) + 11)],
                "Calculate the result of the expression.", f"{a} {sym} {b}")

def qa_fixed(r):
    topic, q, a, expl, wrong = r.choice(FIXED)
    return item("fixed", q, a, expl, wrong)

def qa_wp(r):
    w = make_wp(r, r.choice(TRAIN_WP))
    sol = "\n".join(w["plain"])
    bad = w["answer"] + r.choice([-3, -1, 1, 2, 5])
    it = item("wp", w["question"], w["answer"], f"{sol}\nThe answer is {w['answer']}.", f"{w['plain'][0]}\nSo the answer is {bad}.",
              "", None, "Solve the following word problem.", w["question"])
    it["plain"] = w["plain"]
    return it

QA = [(qa_capital, 12), (qa_continent, 4), (qa_class, 8), (qa_food, 5), (qa_diet, 4), (qa_planet, 6), (qa_matter, 5),
      (qa_colour, 6), (qa_opposite, 6), (qa_calendar, 6), (qa_units, 6), (qa_arith, 12), (qa_fixed, 14), (qa_wp, 8)]
TOPIC = {"capital": "geography", "continent": "geography", "class": "animals", "food": "animals", "diet": "animals",
         "planet": "astronomy", "matter": "science", "colour": "colours", "opposite": "words", "calendar": "the calendar",
         "units": "measurement", "arith": "arithmetic", "fixed": "general knowledge", "wp": "maths"}
UNHELPFUL = ["I'm not sure. You should look it up somewhere else.", "That is a difficult question and I cannot answer it.",
             "Sorry, I don't have any information about that.", "It depends on many things, so there is no single answer."]

def train_qa(r, fams=None):
    pool = [(f, w) for f, w in QA if fams is None or f.__name__[3:] in fams]
    fns, ws = zip(*pool)
    return r.choices(fns, ws)[0](r)

def bad_answer(r, it):
    """A worse answer: wrong fact / wrong arithmetic (mostly), unhelpful or off-topic."""
    x = r.random()
    if x < 0.7:
        return it["wrong"]
    if x < 0.85:
        return r.choice(UNHELPFUL)
    return train_qa(r)["expl"]

# ---------------------------------------------------------------------------
# Instruction sources
# ---------------------------------------------------------------------------

ALPACA_HEAD = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
ALPACA_HEAD_IN = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                  "Write a response that appropriately completes the request.")

def alpaca_composite(r):
    k = r.randrange(7)
    if k == 0:
        row = r.choice(COUNTRIES)
        return "Write a few sentences about the given country.", bare(row[0]), para_country(r, row)
    if k == 1:
        i = r.randrange(8)
        return f"Write a short paragraph about the planet {PLANETS[i]}.", "", para_planet(r, i)
    if k == 2:
        row = r.choice(ANIMALS)
        return "Describe the given animal in a few sentences.", row[0], para_animal(r, row)
    if k == 3:
        what, seq = r.choice([("planets of the solar system, in order from the Sun", PLANETS),
                              ("days of the week, starting with Monday", DAYS), ("months of the year, in order", MONTHS)])
        return f"List the {what}.", "", "\n".join(f"{i + 1}. {x}" for i, x in enumerate(seq))
    if k == 4:
        cls = r.choice(CLASSES)
        xs = r.sample([a[0] for a in ANIMALS if a[2] == cls], 3)
        return (f"Name three animals that are {CLASS_PL[cls]}.", "",
                f"Three animals that are {CLASS_PL[cls]} are the {xs[0]}, the {xs[1]} and the {xs[2]}. " + CLASS_FACTS[cls][0])
    if k == 5:
        xs = r.sample(ANIMALS, 4)
        out = "\n".join(f"{cap(a[0])}: {a[2]}" for a in xs)
        return "Sort the following animals into mammals, birds, reptiles and fish.", ", ".join(a[0] for a in xs), out
    cont = r.choice(MAIN_CONTINENTS)
    xs = r.sample([c for c in COUNTRIES if c[2] == cont], 3)
    return (f"Name three countries in {cont} and their capital cities.", "",
            "\n".join(f"- {cap(c[0])}: {c[1]}" for c in xs))

def build_alpaca():
    r = rng("alpaca")
    rows, seen = [], set()
    while len(rows) < 400:
        if r.random() < 0.15:
            ins, inp, out = alpaca_composite(r)
        else:
            it = train_qa(r)
            use_input = it["inst"] is not None and r.random() < 0.35
            ins, inp = (it["inst"], it["inp"]) if use_input else (it["q"], "")
            out = it["expl"] + (" " + it["extra"] if it["extra"] and r.random() < 0.5 else "")
        if (ins, inp) in seen:
            continue
        seen.add((ins, inp))
        text = (f"{ALPACA_HEAD_IN}\n\n### Instruction:\n{ins}\n\n### Input:\n{inp}\n\n### Response:\n{out}" if inp
                else f"{ALPACA_HEAD}\n\n### Instruction:\n{ins}\n\n### Response:\n{out}")
        rows.append({"instruction": ins, "input": inp, "output": out, "text": text})
    write_jsonl("sources/alpaca_gpt4.jsonl", rows, ["instruction", "input", "output", "text"])

ORCA_SYS = [
    "You are an AI assistant. You will be given a task. You must generate a detailed and long answer.",
    "You are a helpful assistant, who always provide explanation. Think like you are answering to a five year old.",
    "You are an AI assistant. User will you give you a task. Your goal is to complete the task as faithfully as you can. "
    "While performing the task think step-by-step and justify your steps.",
    "You are an AI assistant that helps people find information.",
    "You are an AI assistant that follows instruction extremely well. Help as much as you can.",
    "Explain how you used the definition to come up with the answer.",
    "",
]

def orca_question(r, kind, it):
    """FLAN-submix style prompt for a bank item; returns (question, core answer)."""
    if kind == "cot":
        q = r.choice(["{q}\nLet's think first. Chain of thought:", "Question: {q}\nAnswer: Let's think step by step.",
                      "Lizzy: {q}\nMe: Hmmm, let me think. I think this is the detailed solution:"]).format(q=it["q"])
        return q, "\n".join(it["plain"]) + r.choice([f"\nSo the answer is {it['a']}.", f"\nThe answer: {it['a']}."])
    if kind == "niv" and it["inst"]:
        q = r.choice(["Definition: In this task, you are given an input. {i}\nInput: {x}\nOutput:",
                      "Detailed Instructions: {i}\nQ: {x}\nA:",
                      "Teacher: {i}\nTeacher: Now, understand the problem? Solve this instance: {x}\nStudent:"]).format(i=it["inst"], x=it["inp"])
        return q, it["a"]
    if kind == "t0":
        ctx = it["expl"] + (" " + it["extra"] if it["extra"] else "")
        q = r.choice(["Q: {q}\nA:", "Read the passage below and answer the question.\n\nPassage: {c}\n\nQuestion: {q}\nAnswer:",
                      "Given the following context:\n\n{c}\n\nanswer the following question:\n\n{q}"]).format(q=it["q"], c=ctx)
        return q, it["expl"]
    if it["opts"] and r.random() < 0.5:
        opts = list(it["opts"]) + [it["a"]]
        r.shuffle(opts)
        lead = r.choice(["Choose your answer from:", "OPTIONS:", "Pick from:"])
        return f"{it['q']}\n{lead}\n" + "\n".join(f"- {o}" for o in opts), it["expl"]
    return r.choice(["Answer the following question: {q}", "{q}", "Question: {q}\nAnswer:", "Please answer this question: {q}"]).format(q=it["q"]), it["expl"]

def orca_style(r, sysp, core, it):
    """Shape the answer the way the system prompt asks."""
    if "five year old" in sysp:
        return f"Okay, let me explain it in a simple way! {core} So the answer is {it['a']}."
    if "detailed" in sysp:
        return " ".join(x for x in [core, it["extra"], f"Therefore, the answer is: {it['a']}."] if x)
    if "step-by-step" in sysp:
        return (f"Step 1: Read the task carefully and find what it asks for.\nStep 2: Recall the relevant facts. {core}\n"
                f"Step 3: Give the final answer. The answer is {it['a']}.")
    if "definition" in sysp:
        return f"{core}\n\nI used the definition by applying it to the given input, and it leads to the answer {it['a']}."
    return core

def orca_sample(r):
    kind = r.choices(["flan", "niv", "t0", "cot"], [4, 2, 2, 2])[0]
    it = train_qa(r, ["wp"]) if kind == "cot" else train_qa(r)
    if it["fam"] == "wp" and kind != "cot":
        kind = "cot"
    if kind == "niv" and not it["inst"]:
        kind = "flan"
    sysp = (r.choice(ORCA_SYS[3:5]) if kind == "cot" else
            r.choice(ORCA_SYS[5:6] + ORCA_SYS[:3]) if kind == "niv" else r.choice(ORCA_SYS[:5] + ORCA_SYS[6:]))
    q, core = orca_question(r, kind, it)
    return kind, sysp, q, orca_style(r, sysp, core, it), it

def build_openorca():
    r = rng("openorca")
    rows, seen, ids = [], set(), set()
    while len(rows) < 400:
        kind, sysp, q, resp, _ = orca_sample(r)
        n = r.randint(1, 2_000_000)
        if q in seen or (kind, n) in ids:
            continue
        seen.add(q)
        ids.add((kind, n))
        rows.append({"id": f"{kind}.{n}", "system_prompt": sysp, "question": q, "response": resp})
    write_jsonl("sources/openorca.jsonl", rows, ["id", "system_prompt", "question", "response"])

def build_math():
    r = rng("math")
    rows, seen = [], set()
    while len(rows) < 300:
        m = make_math(r)
        if m["problem"] not in seen:
            seen.add(m["problem"])
            rows.append({"problem": m["problem"], "level": m["level"], "type": m["type"], "solution": m["solution"]})
    write_jsonl("sources/math.jsonl", rows, ["problem", "level", "type", "solution"])

def build_metamath():
    r = rng("metamath")
    rows, seen = [], set()
    while len(rows) < 150:
        x = r.random()
        if x < 0.55:
            m = make_math(r)
            typ = r.choice(["MATH_AnsAug", "MATH_Rephrased"])
            orig, query = m["problem"], m["problem"] if typ == "MATH_AnsAug" else m["rephrase"]
            resp = f"{m['solution']}\nThe answer is: {m['answer']}"
        else:
            typ = r.choice(["GSM_AnsAug", "GSM_Rephrased", "GSM_FOBAR"])
            tpl = r.choice([t for t in TRAIN_WP if "fobar" in t] if typ == "GSM_FOBAR" else TRAIN_WP)
            w = make_wp(r, tpl, fobar=typ == "GSM_FOBAR")
            orig = w["question"]
            if typ == "GSM_FOBAR":
                query = f"{w['fobar_q']}\nIf we know the answer to the above question is {w['answer']}, what is the value of unknown variable x?"
                resp = (f"Following the steps of the problem with the unknown number x, the other quantities add up to {w['rest']}, "
                        f"so the answer is x + {w['rest']}.\nWe are given that the answer is {w['answer']}, so we can write: "
                        f"x + {w['rest']} = {w['answer']}.\nSubtracting {w['rest']} from both sides, we get: x = {w['x']}.\n"
                        f"The value of x is {w['x']}.\n#### {w['x']}\nThe answer is: {w['x']}")
            else:
                query = orig if typ == "GSM_AnsAug" else w["rephrase"]
                resp = "\n".join(w["plain"]) + f"\n#### {w['answer']}\nThe answer is: {w['answer']}"
        if query in seen:
            continue
        seen.add(query)
        rows.append({"type": typ, "query": query, "original_question": orig, "response": resp})
    write_jsonl("sources/metamathqa.jsonl", rows, ["type", "query", "original_question", "response"])

# ---------------------------------------------------------------------------
# Preference sources
# ---------------------------------------------------------------------------

GOOD_MODELS = ["gpt-4", "gpt-3.5-turbo", "wizardlm-70b", "ultralm-65b", "vicuna-33b"]
BAD_MODELS = ["llama-2-7b-chat", "alpaca-7b", "falcon-40b-instruct", "pythia-12b", "starchat", "mpt-30b-chat"]

def false_premise(r):
    k = r.randrange(5)
    if k == 0:
        c, cap_, _, oth = r.choice(COUNTRIES)
        o = r.choice(oth)
        return (f"Why is {o} the capital of {c}?", f"{o} is not the capital of {c}. It is a large city there, but the capital of {c} is {cap_}.",
                f"{o} is the capital of {c} because it is the biggest and most famous city.")
    if k == 1:
        name, pl = r.choice([(a[0], a[1]) for a in ANIMALS if a[2] == "mammal"])
        return (f"Why do {pl} lay eggs?", f"{cap(pl)} do not lay eggs. {cap(an(name))} is a mammal, and mammals feed their babies with milk.",
                f"{cap(pl)} lay eggs to keep their babies safe.")
    if k == 2:
        i = r.randrange(7)
        return (f"Which day comes between {DAYS[i]} and {DAYS[i + 1]}?",
                f"No day comes between {DAYS[i]} and {DAYS[i + 1]}. {DAYS[i + 1]} comes straight after {DAYS[i]}.",
                f"{DAYS[(i + 3) % 7]} comes between {DAYS[i]} and {DAYS[i + 1]}.")
    if k == 3:
        return ("What is the name of the ninth planet from the Sun?",
                "There is no ninth planet. The solar system has eight planets, and Neptune is the farthest from the Sun. Pluto is now called a dwarf planet.",
                "The ninth planet from the Sun is Pluto, the largest planet.")
    t = r.choice(["100", "50"])
    return (f"Why does water freeze at {t} degrees Celsius?", f"Water does not freeze at {t} degrees Celsius. Water freezes at 0 degrees Celsius and boils at 100 degrees Celsius at sea level.",
            f"Water freezes at {t} degrees Celsius because that is when it gets cold.")

def build_ultrafeedback():
    r = rng("ultrafeedback")
    rows, seen = [], set()
    while len(rows) < 300:
        src = r.choices(["evol_instruct", "flan_v2_niv2", "sharegpt", "ultrachat", "false_qa"], [3, 2, 3, 3, 1])[0]
        if src == "false_qa":
            prompt, good, bad = false_premise(r)
        else:
            it = train_qa(r)
            good, bad = it["expl"], bad_answer(r, it)
            if src == "evol_instruct":
                prompt = r.choice([f"Using your knowledge of {TOPIC[it['fam']]}, answer the following question: {it['q']}",
                                   f"{it['q']} Explain your answer in one or two complete sentences."])
                good = good + (" " + it["extra"] if it["extra"] else "")
            elif src == "flan_v2_niv2" and it["inst"]:
                prompt = f"Detailed Instructions: {it['inst']}\nQ: {it['inp']}\nA:"
                good, bad = (good, bad) if it["fam"] == "wp" else (it["a"], r.choice([it["wrong"], r.choice(UNHELPFUL)]))
            elif src == "sharegpt":
                q = it["q"]
                if q.split()[0] in ("What", "Which", "How", "Is", "Name", "Tell", "Give", "Calculate", "On", "Counting", "Solve"):
                    q = q[:1].lower() + q[1:]
                prompt = r.choice(["hey, quick question: ", "hi! ", ""]) + q
                good = "Sure! " + good
            else:
                src = "ultrachat" if src == "flan_v2_niv2" else src
                prompt = r.choice(["I'm curious about something. ", "Could you help me with this? ", ""]) + it["q"]
        if prompt in seen or good == bad:
            continue
        seen.add(prompt)
        cr = r.choice([4.0, 4.25, 4.5, 4.75, 5.0])
        rr = r.choice([x for x in (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5) if x < cr - 0.5])
        rows.append({"source": src, "prompt": prompt,
                     "chosen": [{"content": prompt, "role": "user"}, {"content": good, "role": "assistant"}],
                     "chosen-rating": cr, "chosen-model": r.choice(GOOD_MODELS),
                     "rejected": [{"content": prompt, "role": "user"}, {"content": bad, "role": "assistant"}],
                     "rejected-rating": rr, "rejected-model": r.choice(BAD_MODELS)})
    write_jsonl("sources/ultrafeedback_cleaned.jsonl", rows,
                ["source", "prompt", "chosen", "chosen-rating", "chosen-model", "rejected", "rejected-rating", "rejected-model"])

def build_orca_dpo():
    r = rng("orca_dpo")
    rows, seen = [], set()
    while len(rows) < 200:
        kind, sysp, q, good, it = orca_sample(r)
        bad = bad_answer(r, it)
        if q in seen:
            continue
        seen.add(q)
        rows.append({"system": sysp, "question": q, "chosen": good, "rejected": bad})
    write_jsonl("sources/orca_dpo_pairs.jsonl", rows, ["system", "question", "chosen", "rejected"])

# ---------------------------------------------------------------------------
# Eval sets (own phrasings; facts taught above)
# ---------------------------------------------------------------------------

ARC_FIXED = [  # (question, correct, three wrong)
    ("Which planet in our solar system is the largest?", "Jupiter", ["Earth", "Mars", "Mercury"]),
    ("Which planet orbits nearest to the Sun?", "Mercury", ["Venus", "Earth", "Neptune"]),
    ("Which planet has the highest surface temperature?", "Venus", ["Mercury", "Mars", "Uranus"]),
    ("Which planet is known for its reddish colour?", "Mars", ["Jupiter", "Neptune", "Venus"]),
    ("Which planet is best known for its large system of rings?", "Saturn", ["Mars", "Mercury", "Earth"]),
    ("Which planet orbits farthest from the Sun?", "Neptune", ["Jupiter", "Mars", "Earth"]),
    ("A pot of water is heated at sea level. At about what temperature will the water begin to boil?", "100 °C", ["0 °C", "20 °C", "50 °C"]),
    ("At what temperature does pure water turn into ice?", "0 °C", ["100 °C", "50 °C", "37 °C"]),
    ("Which gas do green plants release into the air?", "oxygen", ["carbon dioxide", "helium", "smoke"]),
    ("Plants use energy from which source to make their own food?", "sunlight", ["soil", "wind", "moonlight"]),
    ("A spider walks on how many legs?", "8", ["6", "4", "10"]),
    ("How many legs does every insect have?", "6", ["8", "4", "10"]),
    ("What kind of object is the Sun?", "a star", ["a planet", "a moon", "a comet"]),
    ("Which object travels in an orbit around the Earth?", "the Moon", ["the Sun", "Mars", "Jupiter"]),
    ("What causes day and night on Earth?", "the Earth spinning on its axis", ["the Moon blocking the Sun", "the Sun moving around the Earth", "clouds covering the Sun"]),
    ("About how many days does the Earth take to travel once around the Sun?", "365", ["24", "30", "7"]),
    ("During a storm, why is lightning seen before thunder is heard?", "Light travels faster than sound.", ["Sound travels faster than light.", "Thunder happens the next day.", "Lightning is closer than thunder."]),
    ("Which organ pumps blood through the body?", "the heart", ["the lungs", "the stomach", "the brain"]),
    ("Which force pulls a dropped ball down to the ground?", "gravity", ["magnetism", "light", "sound"]),
    ("Which object would a magnet pick up?", "an iron nail", ["a wooden spoon", "a plastic cup", "a rubber ball"]),
]
WHICH_PHASE = [("Which change happens when liquid water turns into ice?", "freezing"), ("Which change happens when an ice cube turns into water?", "melting"),
               ("A puddle dries up in the sun. What is this change called?", "evaporation"),
               ("Water drops form on the outside of a cold glass. What is this change called?", "condensation")]

def mc_units(r, big, bigs, smalls, n):
    k = r.randint(2, 6)
    wrong = sorted({k * n + n, k * n * 10, k + n, k * 10, k * n - 1} - {k * n})
    return f"How many {smalls} are equal to {k} {bigs}?", str(k * n), [str(x) for x in r.sample(wrong, 3)]

def arc_candidates(r):
    c = [(f"Which planet is {ORD[i]} in order, counting outward from the Sun?", p, r.sample([x for x in PLANETS if x != p], 3))
         for i, p in enumerate(PLANETS)] + list(ARC_FIXED)
    for name, pl, cls, diet, food in ANIMALS:
        stem = r.choice(["Which of these animals is {a}?", "A student sorts animals into groups. Which animal belongs with the {p}?"])
        c.append((stem.format(a=an(cls), p=CLASS_PL[cls]), name, r.sample([a[0] for a in ANIMALS if a[2] != cls], 3)))
        if diet in ("herbivore", "carnivore"):
            opp = "carnivore" if diet == "herbivore" else "herbivore"
            stem = "Which of these animals eats only plants?" if diet == "herbivore" else "Which of these animals hunts other animals for meat?"
            c.append((stem, name, r.sample([a[0] for a in ANIMALS if a[3] == opp], 3)))
    for state, things in STATES.items():
        for t in things:
            c.append((f"Which of these is {an(state)}?", t, r.sample([x for s, xs in STATES.items() if s != state for x in xs], 3)))
    c += [(q, a, [p[0] for p in PHASES if p[0] != a]) for q, a in WHICH_PHASE]
    c += [mc_units(r, *u) for u in UNITS]
    return c

def build_arc():
    r = rng("arc")
    seen, cands = set(), []
    for q, a, w in arc_candidates(r):
        if (q, a) not in seen:
            seen.add((q, a))
            cands.append((q, a, w))
    r.shuffle(cands)
    cands = cands[:90]
    pos, ids, rows = balanced(r, 30, 4) + balanced(r, 60, 4), set(), []
    for (q, a, w), p in zip(cands, pos):
        while True:
            k = r.randrange(3)
            i = (f"Mercury_SC_{r.randint(400000, 416999)}" if k == 0 else f"Mercury_{r.randint(7000000, 7299999)}" if k == 1
                 else f"MCAS_{r.randint(1998, 2015)}_{r.choice([5, 8])}_{r.randint(1, 40)}")
            if i not in ids:
                ids.add(i)
                break
        rows.append({"id": i, "question": q, "choices": {"text": place(a, r.sample(w, 3), p), "label": ["A", "B", "C", "D"]},
                     "answerKey": "ABCD"[p]})
    write_jsonl("eval/arc_challenge/train.jsonl", rows[:30], ["id", "question", "choices", "answerKey"])
    write_jsonl("eval/arc_challenge/test.jsonl", rows[30:], ["id", "question", "choices", "answerKey"])

SCENES = [  # (activity_label, ctx_a, sensible ending); {S}=subject, {p}/{ps}=pronouns
    ("Home and Garden", "{S} is standing in the garden holding a full watering can.", "waters the flowers along the fence."),
    ("Cooking", "{S} fills a pot with water and puts it on the stove.", "waits for the water to boil and then adds the pasta."),
    ("Personal Care and Style", "{S} is standing at the bathroom sink holding a toothbrush.", "puts toothpaste on the brush and starts brushing {ps} teeth."),
    ("Walking in the rain", "{S} steps outside and sees that it has started to rain.", "opens an umbrella to stay dry."),
    ("Making a sandwich", "{S} takes a loaf of bread and a knife out of the cupboard.", "cuts a few slices of bread to make a sandwich."),
    ("Cleaning", "{S} notices that the kitchen floor is covered in dust.", "takes a broom and sweeps the floor clean."),
    ("Running a marathon", "{S} is standing at the start line of a race.", "runs towards the finish line as soon as the whistle blows."),
    ("Home and Garden", "{S} comes home and finds the front door locked.", "takes a key out of {ps} pocket and unlocks the door."),
    ("Family Life", "{S} is very thirsty after playing football in the sun.", "drinks a big glass of cold water."),
    ("Cooking", "{S} cracks two eggs into a hot frying pan.", "cooks the eggs and then slides them onto a plate."),
    ("Personal Care and Style", "{S} steps out of the shower dripping wet.", "dries off with a towel and gets dressed."),
    ("Arts and Entertainment", "{S} sits down at a table with paper and a box of crayons.", "starts drawing a picture of a house and a tree."),
    ("Pets and Animals", "{S} fills a bowl with dog food in the kitchen.", "puts the bowl on the floor, and the dog starts to eat."),
    ("Health", "{S} is feeling very tired late at night.", "turns off the light and goes to sleep in bed."),
    ("Doing laundry", "{S} has a basket full of dirty clothes.", "puts the clothes in the washing machine and adds soap."),
    ("Travel", "{S} is waiting at the edge of a busy road.", "looks both ways and crosses when the road is clear."),
    ("Food and Entertaining", "{S} leaves a bowl of ice cream outside in the hot sun.", "comes back later and finds that the ice cream has melted."),
    ("Education and Communications", "{S} hears the phone ringing in the living room.", "picks up the phone and says hello."),
    ("Home and Garden", "{S} walks into a dark room in the evening.", "switches on the light so that {p} can see."),
    ("Flying kite", "{S} is holding a kite on a windy hill.", "lets out the string, and the kite rises into the sky."),
    ("Making tea", "{S} wants to make a cup of tea.", "boils some water and pours it over a tea bag in a cup."),
    ("Winter", "{S} is about to go outside on a cold, snowy morning.", "puts on a warm coat, a hat and gloves."),
    ("Home and Garden", "{S} notices that a plant by the window has dry soil and drooping leaves.", "gives the plant some water."),
    ("Shopping", "{S} puts apples, bread and milk into a basket at the shop.", "takes the basket to the checkout and pays for the food."),
    ("Reading", "{S} takes a book from the library shelf and sits down at a quiet table.", "opens the book and starts reading the first page."),
    ("Fixing bicycle", "{S} sees that the bicycle has a flat tyre.", "pumps air into the tyre until it is firm again."),
    ("Family Life", "{S} carries a birthday cake with lit candles to the table.", "sets the cake down, and everyone sings happy birthday."),
    ("Washing dishes", "{S} finishes dinner and looks at the pile of dirty plates.", "washes the plates with soap and warm water."),
    ("Swimming", "{S} is standing at the edge of a swimming pool wearing goggles.", "jumps into the water and starts to swim."),
    ("Personal Care and Style", "{S} looks in the mirror and sees that {ps} hair is messy.", "brushes {ps} hair until it looks neat."),
]
ABSURD = ["eats the kitchen table in one bite.", "turns into a cloud and floats away to the moon.", "paints the sun with a toothbrush.",
          "puts a goldfish in the oven to keep it dry.", "starts swimming across the carpet.", "throws the house into the river.",
          "pours milk into {ps} shoes and wears them as a hat.", "plants a chair in the garden and waits for it to grow.",
          "folds the road in half and puts it in a pocket.", "sings to the refrigerator until it flies away.",
          "hammers the water into small squares.", "climbs into the teapot and falls asleep.", "rides the sofa down the stairs like a horse.",
          "feeds the umbrella a bowl of soup.", "puts the moon in a shopping bag.", "reads the window upside down until it melts.",
          "cuts the rain into slices with a pair of scissors.", "brushes the teeth of a lamp post.", "wears the bicycle as a scarf.",
          "eats the phone and calls the cake."]
SUBJECTS = [("A man", "the man", "he", "his"), ("A woman", "the woman", "she", "her"), ("A boy", "the boy", "he", "his"),
            ("A girl", "the girl", "she", "her")]

def build_hellaswag():
    r = rng("hellaswag")
    combos = [(s, sub) for s in SCENES for sub in SUBJECTS]
    r.shuffle(combos)
    combos = combos[:80]
    pos, inds = balanced(r, 20, 4) + balanced(r, 60, 4), r.sample(range(100, 40000), 80)
    rows = []
    for n, (((label, ctx_a, good), (S, the, p, ps)), lab) in enumerate(zip(combos, pos)):
        f = dict(S=S, p=p, ps=ps)
        ctx_b = r.choice([p, the, "then, " + p, "after that, " + the])
        ends = place(good.format(**f), [e.format(**f) for e in r.sample(ABSURD, 3)], lab)
        ca = ctx_a.format(**f)
        src = (f"activitynet~v_{''.join(r.choice('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-') for _ in range(11))}"
               if r.random() < 0.5 else f"wikihow~{r.randint(1000, 99999)}")
        rows.append({"ind": inds[n], "activity_label": label, "ctx_a": ca, "ctx_b": ctx_b, "ctx": ca + " " + ctx_b, "endings": ends,
                     "source_id": src, "split": "train" if n < 20 else "val", "split_type": r.choice(["indomain", "zeroshot"]), "label": str(lab)})
    keys = ["ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "source_id", "split", "split_type", "label"]
    write_jsonl("eval/hellaswag/train.jsonl", rows[:20], keys)
    write_jsonl("eval/hellaswag/validation.jsonl", rows[20:], keys)

def mmlu_candidates(r):
    geo, math_, bio, astro = [], [], [], []
    for c, k, cont, oth in COUNTRIES:
        geo.append((f"Which of the following cities is the capital of {c}?", k, list(oth) + [r.choice([x[1] for x in COUNTRIES if x[1] != k])]))
        geo.append((f"{k} is the capital of which country?", cap(bare(c)), [bare(x[0]) for x in r.sample([x for x in COUNTRIES if x[0] != c], 3)]))
        if (c, k, cont, oth) in CONTINENT_COUNTRIES:
            geo.append((f"On which continent is {c} located?", cont, r.sample([x for x in CONTINENTS if x != cont], 3)))
    geo.append(("Which of the following is the largest continent by area?", "Asia", ["Europe", "Africa", "South America"]))
    geo.append(("Which of the following is the largest ocean on Earth?", "the Pacific Ocean", ["the Atlantic Ocean", "the Indian Ocean", "the Arctic Ocean"]))
    for _ in range(40):
        a, b, c = r.randint(12, 60), r.randint(3, 9), r.randint(2, 30)
        kind = r.randrange(3)
        q, v = ((f"What is the value of {a} × {b}?", a * b) if kind == 0 else (f"What is the value of {a} + {b * 7} − {c}?", a + b * 7 - c)
                if kind == 1 else (f"What is {a * b} ÷ {b}?", a))
        math_.append((q, str(v), [str(v + d) for d in r.sample([-12, -10, -2, -1, 1, 2, 10, 12], 3)]))
    for u in UNITS:
        math_.append(mc_units(r, *u))
    for name, pl, cls, diet, food in ANIMALS:
        bio.append((f"To which class of vertebrates does the {name} belong?", cap(CLASS_PL[cls]), [cap(CLASS_PL[x]) for x in CLASSES if x != cls]))
        if diet:
            bio.append((f"Which term best describes the diet of the {name}?", diet, [d for d in ("herbivore", "carnivore", "omnivore", "decomposer") if d != diet]))
    bio += [("Which characteristic is shared by all mammals?", "They feed their young with milk.", ["They have feathers.", "They breathe with gills.", "They have dry, scaly skin."]),
            ("Which group of animals has feathers?", "birds", ["reptiles", "fish", "mammals"]),
            ("Which group of animals breathes with gills?", "fish", ["birds", "mammals", "reptiles"]),
            ("During photosynthesis, which gas do plants take in?", "carbon dioxide", ["oxygen", "helium", "hydrogen"])]
    for i, p in enumerate(PLANETS):
        astro.append((f"Which planet is the {ORD[i]} planet from the Sun?", p, r.sample([x for x in PLANETS if x != p], 3)))
        astro.append((f"Counting outward from the Sun, what is the position of {p}?", ORD[i], r.sample([x for x in ORD if x != ORD[i]], 3)))
    astro += [(q, a, w) for q, a, w in ARC_FIXED[:6]] + [
        ("How many planets are in our solar system?", "eight", ["seven", "nine", "ten"]),
        ("What is at the centre of our solar system?", "the Sun", ["the Earth", "the Moon", "Jupiter"]),
        ("How long does it take the Earth to orbit the Sun once?", "about 365 days", ["about 24 hours", "about 30 days", "about 7 days"])]
    return {"high_school_geography": geo, "elementary_mathematics": math_, "high_school_biology": bio, "astronomy": astro}

def build_mmlu():
    r = rng("mmlu")
    pools = mmlu_candidates(r)
    picked = []
    for subj, cands in pools.items():
        uniq = list({q: (q, a, w) for q, a, w in cands}.values())
        picked += [(subj, c) for c in r.sample(uniq, 18)]
    r.shuffle(picked)
    picked = picked[:70]
    rows = []
    for (subj, (q, a, w)), p in zip(picked, balanced(r, 10, 4) + balanced(r, 60, 4)):
        rows.append({"question": q, "subject": subj, "choices": place(a, r.sample(w, 3), p), "answer": p})
    write_jsonl("eval/mmlu/dev.jsonl", rows[:10], ["question", "subject", "choices", "answer"])
    write_jsonl("eval/mmlu/test.jsonl", rows[10:], ["question", "subject", "choices", "answer"])

TQA_MISC = [  # (question, true answers, false answers)
    ("Is a whale a type of fish?", ["No, a whale is a mammal.", "No, whales are mammals that breathe air with lungs."], ["Yes, a whale is a fish.", "Yes, whales are fish because they live in the sea."]),
    ("What kind of animal is a dolphin?", ["A dolphin is a mammal.", "Dolphins are mammals that live in the sea."], ["A dolphin is a fish.", "A dolphin is a reptile."]),
    ("Are bats a kind of bird?", ["No, bats are mammals.", "No, bats can fly but they are mammals."], ["Yes, bats are birds because they can fly.", "Yes, every animal that flies is a bird."]),
    ("Penguins cannot fly. Are they still birds?", ["Yes, penguins are birds.", "Yes, penguins have feathers and lay eggs, so they are birds."], ["No, penguins are not birds because they cannot fly.", "No, penguins are fish."]),
    ("Is a spider a kind of insect?", ["No, a spider is not an insect.", "No, spiders have eight legs and insects have six."], ["Yes, a spider is an insect.", "Yes, all small animals with legs are insects."]),
    ("Are sharks mammals?", ["No, sharks are fish.", "No, a shark is a fish that breathes with gills."], ["Yes, sharks are mammals.", "Yes, sharks are mammals like whales."]),
    ("Which planet orbits closest to the Sun?", ["Mercury orbits closest to the Sun.", "Mercury is the nearest planet to the Sun."], ["Venus orbits closest to the Sun.", "Earth orbits closest to the Sun."]),
    ("Which planet is hotter than all the others?", ["Venus is the hottest planet.", "Venus, because its thick atmosphere traps heat."], ["Mercury is the hottest planet because it is closest to the Sun.", "Mars is the hottest planet because it is red."]),
    ("How many planets does our solar system have?", ["Our solar system has eight planets.", "Eight; Pluto is a dwarf planet."], ["Our solar system has nine planets.", "Our solar system has ten planets."]),
    ("Which planet is bigger than every other planet?", ["Jupiter is the largest planet."], ["Saturn is the largest planet.", "Earth is the largest planet."]),
    ("Is the Sun a planet?", ["No, the Sun is a star.", "No, the Sun is the star at the centre of the solar system."], ["Yes, the Sun is the biggest planet.", "Yes, the Sun is a planet made of fire."]),
    ("Does the Sun travel around the Earth?", ["No, the Earth travels around the Sun.", "No, the Earth goes around the Sun once a year."], ["Yes, the Sun goes around the Earth every day.", "Yes, the Sun orbits the Earth."]),
    ("Is the Moon a planet?", ["No, the Moon travels around the Earth.", "No, the Moon is the Earth's natural satellite."], ["Yes, the Moon is a planet.", "Yes, the Moon is the smallest planet."]),
    ("Why do we have day and night?", ["Because the Earth spins once every 24 hours.", "Day and night happen because the Earth spins."], ["Because the Sun goes around the Earth every day.", "Because the Moon covers the Sun every night."]),
    ("What is the boiling point of water at sea level?", ["Water boils at 100 degrees Celsius at sea level."], ["Water boils at 50 degrees Celsius at sea level.", "Water boils at 0 degrees Celsius at sea level."]),
    ("What is the freezing point of water?", ["Water freezes at 0 degrees Celsius."], ["Water freezes at 100 degrees Celsius.", "Water freezes at 10 degrees Celsius."]),
    ("Is steam a liquid?", ["No, steam is a gas.", "No, steam is water in the form of a gas."], ["Yes, steam is a liquid.", "Yes, steam is a solid."]),
    ("Is ice a liquid?", ["No, ice is a solid.", "No, ice is frozen water, which is a solid."], ["Yes, ice is a liquid.", "Yes, ice is a gas."]),
    ("Which months have 28 days?", ["All twelve months have at least 28 days.", "Every month has 28 days or more."], ["Only February has 28 days.", "No month has 28 days."]),
    ("Does February always have 28 days?", ["No, February has 29 days in a leap year.", "No, it has 28 days, or 29 in a leap year."], ["Yes, February always has 28 days.", "No, February always has 30 days."]),
    ("How many centimetres make one metre?", ["There are 100 centimetres in a metre."], ["There are 10 centimetres in a metre.", "There are 1000 centimetres in a metre."]),
    ("How many minutes make one hour?", ["There are 60 minutes in an hour."], ["There are 100 minutes in an hour.", "There are 30 minutes in an hour."]),
    ("How many days make one week?", ["There are seven days in a week."], ["There are five days in a week.", "There are ten days in a week."]),
    ("What happens when you multiply a number by zero?", ["You always get zero.", "Any number times zero is zero."], ["You get the same number back.", "You always get one."]),
    ("Which colour do blue and yellow paint make when mixed?", ["Blue and yellow paint make green."], ["Blue and yellow paint make purple.", "Blue and yellow paint make orange."]),
    ("Which colour do red and yellow paint make when mixed?", ["Red and yellow paint make orange."], ["Red and yellow paint make green.", "Red and yellow paint make blue."]),
    ("Which gas do plants give off in sunlight?", ["Plants give off oxygen.", "Oxygen, which people and animals breathe in."], ["Plants give off only smoke.", "Plants give off helium."]),
    ("Can green plants grow without any light?", ["No, green plants need sunlight to make their food.", "No, plants need light, water and air to grow."], ["Yes, plants grow best in complete darkness.", "Yes, plants only need darkness to grow."]),
    ("How many legs does an insect walk on?", ["An insect has six legs."], ["An insect has eight legs.", "An insect has four legs."]),
    ("Do cows eat meat?", ["No, cows are herbivores that eat grass.", "No, cows eat plants such as grass."], ["Yes, cows mostly eat meat.", "Yes, cows are carnivores."]),
    ("Do lions eat grass?", ["No, lions are carnivores that eat meat.", "No, lions eat meat from other animals."], ["Yes, lions mostly eat grass.", "Yes, lions are herbivores."]),
    ("Which ocean is the biggest?", ["The Pacific Ocean is the largest ocean."], ["The Atlantic Ocean is the largest ocean.", "The Indian Ocean is the largest ocean."]),
    ("Which mountain is the highest above sea level?", ["Mount Everest is the highest mountain above sea level."], ["Mont Blanc is the highest mountain above sea level.", "Mount Kilimanjaro is the highest mountain above sea level."]),
    ("Why is lightning seen before thunder is heard?", ["Because light travels faster than sound."], ["Because thunder is made the next day.", "Because our eyes are closer to the sky than our ears."]),
    ("Which continent is the largest?", ["Asia is the largest continent."], ["Europe is the largest continent.", "Africa is the largest continent."]),
    ("What do magnets pull on?", ["Magnets attract things made of iron."], ["Magnets attract wood and paper.", "Magnets attract every kind of material."]),
]

def build_truthfulqa():
    r = rng("truthfulqa")
    rows = []
    for c, k, cont, (o1, o2) in r.sample(COUNTRIES, 60 - len(TQA_MISC)):
        if r.random() < 0.5:
            q, t = f"What is the capital city of {c}?", [f"The capital of {c} is {k}.", f"{k} is the capital of {c}, not {o1}."]
            f = [f"The capital of {c} is {o1}.", f"The capital of {c} is {o2}.", f"{cap(c)} has no capital city."]
        else:
            q, t = f"Is {o1} the capital of {c}?", [f"No, the capital of {c} is {k}.", f"No, {o1} is a city in {c}, but {k} is the capital."]
            f = [f"Yes, {o1} is the capital of {c}.", f"Yes, {o1} is the capital because it is the largest city.", f"No, the capital of {c} is {o2}."]
        rows.append((q, t, f))
    rows += TQA_MISC
    r.shuffle(rows)
    out = [{"question": q, "mc1_targets": {"choices": [t[0]] + f, "labels": [1] + [0] * len(f)},
            "mc2_targets": {"choices": t + f, "labels": [1] * len(t) + [0] * len(f)}} for q, t, f in rows]
    write_jsonl("eval/truthfulqa_mc/validation.jsonl", out, ["question", "mc1_targets", "mc2_targets"])

WINO = [  # (sentence with {A} {B}, blank phrase when answer is A, blank phrase when answer is B)
    ("{A} is taller than {B}, so _ ", "can reach the top shelf without a ladder.", "needs a ladder to reach the top shelf."),
    ("{A} ran faster than {B} in the race, so _ ", "won the gold medal.", "finished in second place."),
    ("{A} was hungry but {B} had just eaten, so _ ", "asked for a sandwich.", "did not want a sandwich."),
    ("{A} lent {B} an umbrella because _ ", "had two of them.", "had forgotten one at home."),
    ("{A} helped {B} with the math homework because _ ", "was good at math.", "was struggling with math."),
    ("{A} wore a thick coat while {B} wore a T-shirt, because _ ", "felt cold.", "felt warm."),
    ("{A} taught {B} how to swim because _ ", "was a good swimmer.", "was afraid of the water."),
    ("{A} woke up early but {B} slept late, so _ ", "had time for breakfast.", "had to skip breakfast."),
    ("{A} carried the heavy box for {B} because _ ", "was stronger.", "had a sore back."),
]
FIT = [("elephant", "car"), ("watermelon", "cup"), ("piano", "backpack"), ("bicycle", "cupboard"), ("pizza", "lunchbox"),
       ("tree", "flower pot"), ("ball", "mug"), ("suitcase", "drawer"), ("guitar", "shoebox")]

def build_winogrande():
    r = rng("winogrande")
    cands = []
    for sent, ea, eb in WINO:
        for _ in range(8):
            a, b = r.sample([n for n, _ in NAMES], 2)
            cands.append((sent.format(A=a, B=b), a, b, ea, eb))
    for x, y in FIT:
        cands.append((f"The {x} did not fit into the {y} because the _ ", x, y, "was too big.", "was too small."))
    seen, uniq = set(), []
    for c in cands:
        if c[0] not in seen:
            seen.add(c[0])
            uniq.append(c)
    r.shuffle(uniq)
    rows = []
    for (s, o1, o2, ea, eb), ans in zip(uniq[:70], balanced(r, 10, 2) + balanced(r, 60, 2)):
        rows.append({"sentence": s + (ea if ans == 0 else eb), "option1": o1, "option2": o2, "answer": str(ans + 1)})
    write_jsonl("eval/winogrande/train.jsonl", rows[:10], ["sentence", "option1", "option2", "answer"])
    write_jsonl("eval/winogrande/validation.jsonl", rows[10:], ["sentence", "option1", "option2", "answer"])

def build_gsm8k():
    r = rng("gsm8k")
    rows, seen = [], set()
    while len(rows) < 70:
        w = make_wp(r, EVAL_WP[len(rows) % len(EVAL_WP)])
        if w["question"] not in seen:
            seen.add(w["question"])
            rows.append({"question": w["question"], "answer": "\n".join(w["ann"]) + f"\n#### {w['answer']}"})
    r.shuffle(rows)
    write_jsonl("eval/gsm8k/train.jsonl", rows[:10], ["question", "answer"])
    write_jsonl("eval/gsm8k/test.jsonl", rows[10:], ["question", "answer"])

# ---------------------------------------------------------------------------
# README + main
# ---------------------------------------------------------------------------

TABLE = [
    ("corpus.jsonl", "pretraining / tokenizer corpus (`{\"text\"}` rows)"), ("sources/alpaca_gpt4.jsonl", "vicgalle/alpaca-gpt4"),
    ("sources/openorca.jsonl", "Open-Orca/OpenOrca"), ("sources/math.jsonl", "hendrycks/competition_math (MATH)"),
    ("sources/metamathqa.jsonl", "meta-math/MetaMathQA"), ("sources/ultrafeedback_cleaned.jsonl", "argilla/ultrafeedback-binarized-preferences-cleaned"),
    ("sources/orca_dpo_pairs.jsonl", "Intel/orca_dpo_pairs"), ("eval/arc_challenge/{train,test}.jsonl", "allenai/ai2_arc (ARC-Challenge)"),
    ("eval/hellaswag/{train,validation}.jsonl", "Rowan/hellaswag"), ("eval/mmlu/{dev,test}.jsonl", "cais/mmlu"),
    ("eval/truthfulqa_mc/validation.jsonl", "truthful_qa (multiple_choice)"), ("eval/winogrande/{train,validation}.jsonl", "winogrande (winogrande_xl)"),
    ("eval/gsm8k/{train,test}.jsonl", "gsm8k (main)"),
]

def write_readme():
    lines = ["# Embedded synthetic data", "",
             "Everything here is **synthetic**, generated deterministically by `scripts/make_embedded_data.py` "
             "(rerun it to regenerate byte-identical files). Each file copies the schema of the hub dataset named below, "
             "but the content is a tiny world of simple true facts (capitals, planets, animals, matter, colours, opposites, "
             "calendar, units, arithmetic) so a tiny model can run the whole pipeline offline.", "",
             "| file | schema it mirrors (hub id) | rows |", "|---|---|---|"]
    for rel, hub in TABLE:
        m = re.match(r"(.*)\{(.*)\}\.jsonl", rel)
        files = [f"{m.group(1)}{s}.jsonl" for s in m.group(2).split(",")] if m else [rel]
        counts = "/".join(str(sum(1 for _ in open(OUT / f, encoding="utf-8"))) for f in files)
        lines.append(f"| `{rel}` | {hub} | {counts} |")
    (OUT / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

def main():
    for build in (build_corpus, build_alpaca, build_openorca, build_math, build_metamath, build_ultrafeedback, build_orca_dpo,
                  build_arc, build_hellaswag, build_mmlu, build_truthfulqa, build_winogrande, build_gsm8k):
        build()
    write_readme()
    print(f"wrote {sum(1 for _ in OUT.rglob('*') if _.is_file())} files under {OUT}")

if __name__ == "__main__":
    main()
