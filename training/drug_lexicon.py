#!/usr/bin/env python3
"""Build the classifier's drug lexicon: single-word drug names that are never a person or a place.

usage: drug_lexicon.py --wheel drug_named_entity_recognition-2.0.9-py3-none-any.whl --out ../models/classifier/drugs.txt

Source: the PyPI package drug-named-entity-recognition 2.0.9 (MIT, Fast Data Science Ltd; its
dictionary is compiled from MedlinePlus, the DrugBank open vocabulary and Wikipedia). Kept: drug
names and brand names that are one word of at least three letters (hyphens allowed). Removed:
every first name, last name, city, state, country and street name that Faker (all its locales)
knows, so that a person called "Allegra" or "Kendrick" or a town that shares a brand's name is
never silenced by the lexicon. veil drops a PERSON, LOCATION or ORGANIZATION span made only of
these words (decoding rule 6, models/README.md).
"""
import argparse, bz2, importlib, pickle, pkgutil, re, zipfile

import faker.providers.address as address_providers
import faker.providers.person as person_providers

MEMBER = "drug_named_entity_recognition/drug_ner_dictionary.pkl.bz2"
WORD = re.compile(r"[a-z][a-z-]*[a-z]")
NAME_ATTRS = ["first_names", "first_names_male", "first_names_female", "first_names_nonbinary",
              "last_names", "last_names_male", "last_names_female"]
PLACE_ATTRS = ["cities", "city_names", "states", "provinces", "regions", "countries", "street_names",
               "street_suffixes", "city_prefixes", "city_suffixes", "states_abbr"]


def faker_words(package, attrs):
    """Lower-case words of the listed attributes of every locale's Provider in a Faker package."""
    out = set()
    for m in pkgutil.iter_modules(package.__path__):
        try:
            prov = importlib.import_module(f"{package.__name__}.{m.name}").Provider
        except (ImportError, AttributeError):
            continue
        for attr in attrs:
            v = getattr(prov, attr, None)
            if isinstance(v, (list, tuple, set, frozenset, dict)) or hasattr(v, "keys"):
                for item in v:
                    if isinstance(item, str):
                        out.update(w.lower() for w in re.findall(r"[^\W\d_]+", item))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with zipfile.ZipFile(a.wheel) as z:
        data = pickle.loads(bz2.decompress(z.read(MEMBER)))
    drugs = {v for v in data["drug_variant_to_canonical"] if len(v) >= 3 and WORD.fullmatch(v)}
    names = faker_words(person_providers, NAME_ATTRS)
    places = faker_words(address_providers, PLACE_ATTRS)
    kept = sorted(drugs - names - places)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("# Drug names that are never a person or a place (one lower-case word per line).\n"
                "# Built by training/drug_lexicon.py from drug-named-entity-recognition 2.0.9 (PyPI, MIT License,\n"
                "# Copyright (c) 2023 Fast Data Science Ltd; sources: MedlinePlus, DrugBank open vocabulary,\n"
                "# Wikipedia), minus every name and place Faker knows.\n")
        f.write("\n".join(kept) + "\n")
    print(f"{len(drugs)} one-word drug names, {len(drugs) - len(kept)} removed as names or places, {len(kept)} kept")


if __name__ == "__main__":
    main()
