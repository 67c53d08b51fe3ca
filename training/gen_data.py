#!/usr/bin/env python3
"""Synthetic training data for the veil token classifier.

Everything here is generated: Faker (many locales) supplies names, streets, cities and
companies; the templates, clinical vocabulary and hard negatives are written in this file;
with --drugs, medication lists also draw on the drug lexicon (drug_lexicon.py); with
--templates, 10% of the examples come from presidio-evaluator's public sentence templates
(PyPI, MIT; every fifth template held out). No evaluation data is read.

usage: gen_data.py --n 60000 --seed 13 [--drugs drugs.txt] [--templates templates.txt] --out data/train.jsonl

Output lines: {"text", "spans": [{"start", "end", "label"}]} (Python string offsets).
Labels: PERSON, LOCATION, ADDRESS, DATE, ORGANIZATION.
"""
import argparse, json, random, re, sys, unicodedata

from faker import Faker

R = random.Random()

# --------------------------------------------------------------------------------------
# Faker locales, weighted. Latin-script locales dominate (prompts are mostly Latin script),
# a few others appear so the model does not fall over on them.
LOCALES = {
    "en_US": 14, "en_GB": 4, "en_IE": 2, "en_IN": 3, "en_NZ": 1, "en_AU": 1, "en_CA": 2,
    "en_PK": 1, "en_NG": 1, "en_KE": 1, "de_DE": 3, "de_AT": 1, "de_CH": 1, "fr_FR": 3,
    "fr_CA": 1, "fr_BE": 1, "es_ES": 3, "es_MX": 2, "es_AR": 1, "es_CO": 1, "es_CL": 1,
    "it_IT": 3, "pt_BR": 2, "pt_PT": 1, "nl_NL": 2, "nl_BE": 1, "sv_SE": 2, "no_NO": 1,
    "da_DK": 1, "fi_FI": 2, "is_IS": 1, "pl_PL": 2, "cs_CZ": 2, "sk_SK": 1, "sl_SI": 1,
    "hr_HR": 1, "hu_HU": 2, "ro_RO": 1, "lt_LT": 1, "lv_LV": 1, "et_EE": 1, "tr_TR": 2,
    "az_AZ": 1, "id_ID": 1, "vi_VN": 1, "fil_PH": 1, "yo_NG": 1, "ig_NG": 1, "ha_NG": 1,
    "zu_ZA": 1, "tw_GH": 1, "sw": 1, "ga_IE": 1, "de_LU": 1,
    # non-Latin scripts, rarely
    "el_GR": 1, "ru_RU": 1, "uk_UA": 1, "bg_BG": 0.5, "he_IL": 0.3, "ar_AA": 0.3,
    "zh_CN": 0.5, "ja_JP": 0.3, "ko_KR": 0.3, "hi_IN": 0.3, "th_TH": 0.2, "ka_GE": 0.2,
}
FAKERS = {}
LOC_NAMES = []
LOC_W = []


def init_fakers(seed):
    for loc, w in LOCALES.items():
        try:
            f = Faker(loc)
        except Exception:
            continue
        f.seed_instance(seed + len(FAKERS))
        FAKERS[loc] = f
        LOC_NAMES.append(loc)
        LOC_W.append(w)


def fk(latin_only=False):
    while True:
        loc = R.choices(LOC_NAMES, LOC_W)[0]
        if latin_only and loc.split("_")[0] in {"el", "ru", "uk", "bg", "he", "ar", "zh", "ja", "ko", "hi", "th", "ka"}:
            continue
        return FAKERS[loc]


def safe(fn, default=""):
    try:
        v = fn()
        return v if isinstance(v, str) and v.strip() else default
    except Exception:
        return default


# Extra transliterated names of origins Faker covers thinly (written for this file).
EXTRA_FIRST = """Mohammed Ahmed Fatima Aisha Omar Yusuf Khalid Layla Zainab Hassan Hussein Mustafa Samira
Nour Karim Rania Tariq Imran Bilal Farah Leila Amir Reza Parisa Dariush Mehdi Shirin Arash Nasrin
Wei Jing Li Mei Xiu Hao Jun Yan Ling Chen Hui Ming Zhen Qiang Yun Xin Bo Lei Tao Feng
Hiroshi Yuki Takeshi Haruto Sakura Aiko Kenji Naoko Satoshi Emi Ji-hoon Min-jun Seo-yeon Hye-jin
Nguyen Thi Minh Anh Linh Duc Huong Thanh Tuan Lan Quang Mai Phuong
Chinedu Ngozi Oluwaseun Adebayo Funmilayo Chiamaka Emeka Kwame Kofi Ama Akosua Yaw Abena
Amara Zuri Wanjiru Njeri Otieno Achieng Kamau Thabo Sipho Nomvula Lerato Tendai Farai
Priya Rahul Anjali Vikram Sanjay Deepa Arjun Kavya Rohan Sunita Ravi Lakshmi Ananya Aditya
Giorgos Eleni Dimitris Katerina Nikos Vasiliki Yannis Sofia Kostas Panagiotis Maria Ioanna
Olga Sergei Dmitri Natalia Ivan Anastasia Mikhail Yulia Oksana Taras Bohdan Vladimir
Siobhan Niamh Aoife Ciaran Padraig Eoin Saoirse Oisin Grainne Tadhg Bronagh
Kalani Keanu Leilani Mele Sione Tavita Aroha Wiremu Manaia Tane Ngaio
Jesús Concepción Araceli Guadalupe Xochitl Itzel Rocío Joaquín Iñaki Begoña Ainhoa
Bjørn Åsa Søren Ingrid Sigrún Þórunn Guðmundur Eyjólfur Ólafur Kári Hjördís
Zoltán Gyöngyi Erzsébet Csaba Szilvia Tünde Levente Ildikó Bálint Réka Krisztián Szabina
Jiří Květa Radek Zdeněk Blažena Vojtěch Bořivoj Libuše Přemysl Šárka
Jaakko Tuula Pirkko Veikko Aino Eero Lahja Sisko Onni Päivi Mikko Riikka
Łukasz Małgorzata Grzegorz Wojciech Agnieszka Jędrzej Zbigniew Bożena""".split()
EXTRA_LAST = """Al-Farsi Haddad Khoury Nasser Mansour Rahman Qureshi Siddiqui Chaudhry Hosseini Tehrani Karimi
Wang Zhang Liu Chen Yang Huang Zhao Wu Zhou Xu Sun Ma Zhu Hu Guo Lin He Gao Luo Zheng
Tanaka Suzuki Takahashi Watanabe Yamamoto Nakamura Kobayashi Kim Park Choi Jung Kang Yoon
Nguyen Tran Le Pham Hoang Phan Vu Dang Bui Do Ngo Duong Ly
Okafor Adeyemi Okonkwo Nwosu Eze Mensah Owusu Boateng Asante Kariuki Mwangi Odhiambo Ndlovu Dlamini
Patel Sharma Singh Gupta Reddy Iyer Nair Menon Banerjee Mukherjee Chatterjee Pillai Desai Joshi
Papadopoulos Georgiou Nikolaidis Konstantinidis Ioannou Christodoulou Vlachos Pappas
Ivanov Petrov Smirnov Kuznetsov Popov Sokolov Shevchenko Kovalenko Bondarenko Tkachenko
O'Sullivan O'Brien McCarthy Ní_Bhriain Mac_Giolla Fitzgerald Ó_Súilleabháin MacNamara
Kealoha Fonoti Tuilagi Ngata Te_Whiu Parata
Szöllösy Gelencsér Erdős Kovács Nagy Tóth Szabó Horváth Varga Kiss Molnár Németh Farkas
Novák Dvořák Černý Procházka Kučera Veselý Horák Němec Pokorný Marek Růžička
Virtanen Korhonen Mäkinen Nieminen Mäkelä Hämäläinen Laine Heikkinen Koskinen Järvinen Ruuska
Kowalski Wiśniewski Wójcik Kowalczyk Kamiński Lewandowski Zieliński Szymański Woźniak Dąbrowski
van_der_Berg de_Vries van_Dijk Bakker Janssen Visser Smit de_Boer van_Gijn ter_Horst
García Fernández González Rodríguez López Martínez Sánchez Pérez Gómez Hernández Domínguez
Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer Köhler
Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo Conti
Lindqvist Johansson Andersson Karlsson Nilsson Eriksson Larsson Olsson Persson Svensson
Jónsdóttir Sigurðsson Guðmundsdóttir Einarsson Magnússon Ólafsdóttir
Živković Petrović Jovanović Nikolić Marković Đorđević Stojanović Ilić Popović Horvat Kovačević
Yılmaz Kaya Demir Şahin Çelik Yıldız Yıldırım Öztürk Aydın Özdemir Arslan Doğan""".split()
EXTRA_FIRST = [x.replace("_", " ") for x in EXTRA_FIRST]
EXTRA_LAST = [x.replace("_", " ") for x in EXTRA_LAST]

# First names / surnames that are also ordinary English words. They appear both as names
# (labelled) and as words (unlabelled) so the model has to use context.
WORDY_FIRST = "Bill Will Mark Rose Grace Joy Faith Hope Pat Sue Art Ray Dawn Summer Hunter Frank Sandy Rusty Lily Ivy Penny Jack Robin Wade Chase Earl Jewel Amber Crystal Destiny Glen Dale Miles Cliff Rich Victor Carol June April May August Harmony Sky River Violet Iris Heather Holly Daisy Melody".split()
WORDY_LAST = "Small Long Short Young Brown Green White Black Gray Bell King Rich Hill Wood Stone Rivers Fox Wolf Bird Lamb Moon Snow Frost Winter Summers Spring Price Cash Bush Field Banks Waters Lake Ford Glass Page Marsh Cook Baker Mason Carpenter Shepherd Fisher Hunter Walker Rice Bean Pond Street Hall Parks Day Knight Sharp Strong Love Hope Joy Brave Best Bright".split()


def first_name():
    r = R.random()
    if r < 0.12:
        return R.choice(EXTRA_FIRST)
    if r < 0.17:
        return R.choice(WORDY_FIRST)
    f = fk()
    return safe(lambda: f.first_name(), "Alex")


def last_name():
    r = R.random()
    if r < 0.12:
        return R.choice(EXTRA_LAST)
    if r < 0.17:
        return R.choice(WORDY_LAST)
    f = fk()
    v = safe(lambda: f.last_name(), "Smith")
    if R.random() < 0.04:
        v = v + "-" + safe(lambda: fk().last_name(), "Jones")
    return v


def initial():
    return R.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def person_full():
    """A person name in one of many shapes (no title)."""
    r = R.random()
    fn, ln = first_name(), last_name()
    if r < 0.40:
        return f"{fn} {ln}"
    if r < 0.52:
        return f"{fn} {initial()}. {ln}" if R.random() < 0.8 else f"{fn} {initial()} {ln}"
    if r < 0.60:
        return f"{initial()}. {ln}" if R.random() < 0.7 else f"{initial()}.{initial()}. {ln}"
    if r < 0.67:
        return f"{ln}, {fn}"
    if r < 0.75:
        return f"{fn} {first_name()} {ln}"
    if r < 0.87:
        return fn
    return ln


TITLES = ["Dr.", "Dr", "Mr.", "Mrs.", "Ms.", "Miss", "Mr", "Mrs", "Ms", "Prof.", "Professor", "Sr.", "Sra.",
          "Herr", "Frau", "Mme", "M.", "Rev.", "Nurse", "Sister", "Father", "Capt.", "Sgt."]
SUFFIXES = ["RN", "MD", "NP", "PA", "RRT", "PT", "OT", "SW", "LPN", "CNA", "PhD", "Jr.", "Sr.", "III", "DO", "PharmD"]


def casing(s, mode):
    if mode == "upper":
        return "".join(c.upper() if len(c.upper()) == 1 else c for c in s)
    if mode == "lower":
        return "".join(c.lower() if len(c.lower()) == 1 else c for c in s)
    return s


# --------------------------------------------------------------------------------------
# Places, organizations, dates

SAINTS = ["Mary", "Joseph", "Luke", "John", "Elizabeth", "Francis", "Vincent", "Anne", "Agnes", "Jude",
          "Michael", "Catherine", "Patrick", "Margaret", "Theresa", "Anthony", "Peter", "Paul", "Clare", "Raphael"]
HOSP_SUFFIX = ["Hospital", "General Hospital", "Medical Center", "Memorial Hospital", "Regional Medical Center",
               "Community Hospital", "Rehab", "Rehabilitation Hospital", "Nursing Home", "Health Center", "Clinic",
               "Hospital Center", "Infirmary", "Children's Hospital", "University Hospital", "Care Center",
               "Hospice", "Medical Group", "Heart Institute", "Cancer Center", "Sanatorium", "Klinikum", "Krankenhaus"]


def city():
    f = fk(latin_only=R.random() < 0.9)
    return safe(lambda: f.city(), "Springfield")


def us_town():
    return safe(lambda: FAKERS["en_US"].city(), "Springfield")


def state():
    r = R.random()
    f = FAKERS["en_US"]
    if r < 0.5:
        return f.state()
    if r < 0.8:
        return f.state_abbr()
    g = fk(latin_only=True)
    return safe(lambda: g.administrative_unit(), f.state())


def country():
    return safe(lambda: fk(latin_only=True).country(), "Canada") if R.random() < 0.8 else R.choice(
        ["USA", "U.S.", "UK", "Deutschland", "España", "Italia", "Brasil", "México", "Suomi", "Sverige", "Norge",
         "Magyarország", "Česko", "Polska", "Ελλάδα", "Türkiye", "Nederland", "Schweiz", "Österreich", "Éire"])


def acronym(n=None):
    n = n or R.choice([2, 3, 3, 4])
    return "".join(R.choice("ABCDEFGHIJKLMNOPRSTUVWY") for _ in range(n))


def hospital():
    r = R.random()
    if r < 0.22:
        return f"{city()} {R.choice(HOSP_SUFFIX)}"
    if r < 0.38:
        return f"{last_name()} {R.choice(HOSP_SUFFIX)}"
    if r < 0.50:
        return f"{R.choice(['St.', 'St', 'Saint', 'San', 'Santa', 'Sainte'])} {R.choice(SAINTS)}'s" + (
            " " + R.choice(HOSP_SUFFIX) if R.random() < 0.6 else "")
    if r < 0.60:
        return f"{R.choice(['Mount', 'Mt.', 'Good', 'Sacred', 'Holy', 'Mercy', 'Harbor', 'Bayview', 'Union', 'Franklin', 'Washington', 'Lincoln', 'Northwest', 'Southside', 'Baptist', 'Methodist', 'Presbyterian', 'Beth', 'Lutheran', 'Shriners', 'Kaiser', 'Providence'])} {R.choice(['Sinai', 'Samaritan', 'Heart', 'Cross', 'Hope', 'Israel', 'Family', 'Health', 'Medical', 'Zion', 'Memorial', 'Olive', 'Carmel'])}" + (
            " " + R.choice(HOSP_SUFFIX) if R.random() < 0.5 else "")
    if r < 0.66:
        return R.choice(["U", "Univ of", "University of", "Univ.", "UMass", "UC"]) + " " + R.choice([city(), state(), us_town()]) + (" " + R.choice(HOSP_SUFFIX) if R.random() < 0.4 else "")
    if r < 0.70:
        # Buildings and wards named after people, with a floor or unit number ("Osler 8", "Blalock 5").
        return f"{last_name()} {R.randint(1, 12)}" if R.random() < 0.7 else f"{last_name()} {R.choice(['Pavilion', 'Building', 'Tower', 'Wing', 'House'])}"
    if r < 0.80:
        return acronym() if R.random() < 0.6 else acronym() + " " + R.choice(["Hospital", "Rehab", "MC", "Medical Center", "ER", "Campus"])
    if r < 0.85:
        return f"{city()} {R.choice(['VA', 'Veterans', 'University', 'County', 'Women and Infants', 'Eye and Ear', 'Shore', 'Harbor', 'Valley', 'Lakes', 'Bay'])} {R.choice(HOSP_SUFFIX)}"
    return f"{R.choice(['Hôpital', 'Ospedale', 'Hospital', 'Clínica', 'Szpital', 'Sairaala', 'Klinik', 'Nemocnice', 'Sjukhus'])} {last_name()}"


def street_address():
    f = fk(latin_only=R.random() < 0.95)
    r = R.random()
    if r < 0.55:
        s = safe(lambda: f.street_address(), "12 Main Street")
    elif r < 0.65:
        s = f"{R.randint(1, 9999)} {safe(lambda: f.street_name(), 'Main Street')}"
    elif r < 0.72:
        s = f"{safe(lambda: f.street_name(), 'Main Street')} {R.randint(1, 200)}"
    elif r < 0.78:
        s = f"PO Box {R.randint(10, 99999)}" if R.random() < 0.5 else f"P.O. Box {R.randint(10, 9999)}"
    elif r < 0.82:
        s = R.choice([f"PSC {R.randint(1000, 9999)}, Box {R.randint(1000, 9999)}", f"Unit {R.randint(1000, 9999)} Box {R.randint(1000, 9999)}",
                      f"USNS {last_name()}", f"USS {last_name()}"]) + R.choice(["\n", ", ", " "]) + f"{R.choice(['APO', 'FPO', 'DPO'])} {R.choice(['AA', 'AE', 'AP'])} {R.randint(10000, 99999)}"
    elif r < 0.86:
        s = f"the corner of {safe(lambda: f.street_name(), 'Main Street')} and {safe(lambda: fk().street_name(), 'Oak Street')}"
    else:
        s = safe(lambda: f.street_address(), "12 Main Street") + R.choice([f" Apt. {R.randint(1, 999)}", f" Suite {R.randint(100, 999)}",
                                                                 f", Apt {R.randint(1, 40)}{R.choice('ABCD')}", f" Unit {R.randint(1, 99)}",
                                                                 f" #{R.randint(1, 999)}", f", {R.randint(1, 30)}th floor"])
    return s.replace("\n", ", ")


def full_address():
    f = fk(latin_only=R.random() < 0.95)
    r = R.random()
    if r < 0.45:
        s = safe(lambda: f.address(), "12 Main Street, Springfield")
        if R.random() < 0.5:
            s = s.replace("\n", ", ")
    elif r < 0.75:
        s = f"{street_address()}, {safe(lambda: f.city(), 'Springfield')}"
        if R.random() < 0.5:
            s += f", {safe(lambda: f.postcode(), '12345')}"
        if R.random() < 0.4:
            s += f", {country()}"
    else:
        sep = R.choice(["\n", ", ", " ", "\n, "])
        s = f"{street_address()}{sep}{safe(lambda: f.city(), 'Springfield')}{R.choice([', ', ' '])}{state() if f is FAKERS['en_US'] or R.random() < 0.3 else safe(lambda: f.postcode(), '1000')}"
        if R.random() < 0.5:
            s += f"{sep}{country()} {safe(lambda: f.postcode(), '')}".rstrip()
    return s.strip()


def location():
    r = R.random()
    if r < 0.40:
        return city()
    if r < 0.52:
        return country()
    if r < 0.62:
        return state()
    if r < 0.72:
        return f"{city()}, {state() if R.random() < 0.5 else country()}"
    if r < 0.80:
        return f"{R.choice(['Northern', 'Southern', 'Eastern', 'Western', 'Central', 'Upper', 'Lower', 'North', 'South', 'East', 'West'])} {country() if R.random() < 0.5 else city()}"
    if r < 0.88:
        return f"{last_name()} {R.choice(['County', 'Heights', 'Village', 'Park', 'Falls', 'Springs', 'Hills', 'Township', 'Beach', 'Harbor', 'Valley', 'Square'])}"
    return hospital()


def organization():
    f = fk(latin_only=True)
    r = R.random()
    if r < 0.55:
        return safe(lambda: f.company(), "Acme Corp")
    if r < 0.7:
        return f"{last_name()} {R.choice(['Inc.', 'LLC', 'Ltd', 'GmbH', 'S.A.', 'AG', 'Group', 'Partners', 'Holdings', '& Co.', 'Consulting', 'Labs', 'Capital', 'Bank', 'Foundation', 'Insurance'])}"
    if r < 0.82:
        return f"{R.choice(['University of', 'Bank of', 'Institute of', 'College of', 'Museum of', 'Department of'])} {city()}"
    if r < 0.9:
        syl = ["tek", "ver", "no", "xa", "lu", "mi", "ra", "zon", "ify", "ly", "gen", "sys", "data", "soft", "ion", "ex", "qu", "vo"]
        return ("".join(R.choice(syl) for _ in range(R.randint(2, 3)))).capitalize() + R.choice(["", "", " Inc", " Labs", " AI", " Systems"])
    return f"{city()} {R.choice(['Orchestra', 'Times', 'Herald', 'Credit Union', 'Athletic Club', 'Chamber of Commerce', 'School District', 'Police Department', 'Fire Department', 'Library', 'Symphony'])}"


RELATIVE = ["today", "tomorrow", "tonight", "yesterday", "this morning", "this afternoon", "this evening", "overnight",
            "next week", "last week", "the weekend", "this weekend", "midnight", "noon", "later today", "last night",
            "this am", "this pm", "in the am", "next month", "last month", "the 60s", "the 1st shift", "day shift", "night shift"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
MON3 = [m[:3] for m in MONTHS]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def ordinal(n):
    return f"{n}{'th' if 11 <= n % 100 <= 13 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def date_free():
    d, m, y = R.randint(1, 28), R.randint(1, 12), R.randint(1930, 2035)
    mon = MONTHS[m - 1]
    c = R.randint(0, 29)
    return [
        f"{mon} {d}, {y}", f"{mon} {ordinal(d)}", f"{d} {mon} {y}", f"{MON3[m-1]} {d}", f"{MON3[m-1]}. {d}, {y}",
        f"{m}/{d}", f"{m}/{d}/{y % 100:02d}", f"{m}/{d}/{y}", f"{d}.{m}.{y}", f"{y}-{m:02d}-{d:02d}",
        f"{R.choice(DAYS)} {m}/{d}", f"{R.choice(DAYS)} the {ordinal(d)}", f"{R.choice(DAYS)}, {mon} {d}",
        f"the {ordinal(d)} of {mon}", f"{mon} {y}", f"{y}", f"'{y % 100:02d}", f"{mon}",
        f"{d}-{MON3[m-1]}-{y}", f"{d}-{MON3[m-1]}", f"{MON3[m-1]} '{y % 100:02d}", f"{m}-{d}-{y % 100:02d}",
        f"{R.choice(['Christmas', 'Thanksgiving', 'Easter', 'New Year'])} {y}", f"{ordinal(d)} {mon}", f"{m}/{y}",
        f"{R.choice(['early', 'late', 'mid'])} {mon}", f"{d} {MON3[m-1]}", f"{mon.upper()} {d}", f"{R.choice(DAYS)[:3]} {m}/{d}",
        f"{m}/{d}/{y % 100:02d} {R.randint(1, 12)}:{R.randint(0, 59):02d}",
    ][c]


def date_clinical():
    d, m, y = R.randint(1, 31), R.randint(1, 12), R.randint(1940, 2030)
    c = R.random()
    if c < 0.45:
        return f"{m}/{d}"
    if c < 0.55:
        return f"{m}/{d}/{y % 100:02d}" if R.random() < 0.6 else f"{m}-{d}-{y % 100:02d}"
    if c < 0.68:
        return f"{y}"
    if c < 0.76:
        return f"'{y % 100:02d}"
    if c < 0.84:
        return f"{R.choice(DAYS)} {m}/{d}" if R.random() < 0.5 else f"{m}/{d}/{y}"
    if c < 0.90:
        return f"{MON3[m-1]} {d}" if R.random() < 0.5 else f"{MONTHS[m-1]}"
    if c < 0.95:
        return f"{m}/{R.randint(32, 99)}"  # month/two-digit year, as in "AVR 8/88"
    return f"{m}/{d}/{y}"


# --------------------------------------------------------------------------------------
# Document builder

class Doc:
    def __init__(self):
        self.parts = []  # (text, label|None)

    def add(self, s, label=None):
        if s:
            self.parts.append((s, label))
        return self

    def build(self, case="keep"):
        text, spans, pos = [], [], 0
        for s, lab in self.parts:
            s = casing(s, case)
            if lab:
                # strip surrounding whitespace from the span
                a = len(s) - len(s.lstrip())
                b = len(s.rstrip())
                if b > a:
                    spans.append({"start": pos + a, "end": pos + b, "label": lab})
            text.append(s)
            pos += len(s)
        return {"text": "".join(text), "spans": spans}

    def extend(self, ex):
        """Appends a built example, keeping its spans."""
        last = 0
        for sp in ex["spans"]:
            self.add(ex["text"][last:sp["start"]])
            self.add(ex["text"][sp["start"]:sp["end"]], sp["label"])
            last = sp["end"]
        return self.add(ex["text"][last:])


SLOT_RE = re.compile(r"\{(\w+)\}")


def person_title():
    t = R.choice(TITLES)
    return t, (last_name() if R.random() < 0.7 else person_full())


SLOTS = {
    "PERSON": lambda: (person_full(), "PERSON"),
    "FIRST": lambda: (first_name(), "PERSON"),
    "LAST": lambda: (last_name(), "PERSON"),
    "LOC": lambda: (location(), "LOCATION"),
    "CITY": lambda: (city(), "LOCATION"),
    "COUNTRY": lambda: (country(), "LOCATION"),
    "STATE": lambda: (state(), "LOCATION"),
    "HOSP": lambda: (hospital(), "LOCATION"),
    "WARD": lambda: (last_name(), "LOCATION"),
    "WN": lambda: (ward_number(), None),
    "UNIT": lambda: (R.choice(UNITS), None),
    "ADDR": lambda: (full_address(), "ADDRESS"),
    "STREET": lambda: (street_address(), "ADDRESS"),
    "ORG": lambda: (organization(), "ORGANIZATION"),
    "DATE": lambda: (date_free(), "DATE"),
    "CDATE": lambda: (date_clinical(), "DATE"),
    "DAY": lambda: (R.choice(DAYS + RELATIVE), None),
    "MONTH": lambda: (R.choice(MONTHS), "DATE"),
    "YEAR": lambda: (str(R.randint(1950, 2030)), "DATE"),
    "INITLAST": lambda: (f"{initial()}. {last_name()}", "PERSON"),
    # unlabelled fillers (the pattern tier covers these)
    "EMAIL": lambda: (email(), None),
    "PHONE": lambda: (phone(), None),
    "NUM": lambda: (str(R.randint(2, 500)), None),
    "ID": lambda: (ident(), None),
    "URL": lambda: (url(), None),
    "AGE": lambda: (str(R.randint(18, 99)), None),
    "TITLE": lambda: (R.choice(TITLES), None),
    "JOB": lambda: (safe(lambda: FAKERS["en_US"].job(), "engineer"), None),
    "TECH": lambda: (R.choice(TECH), None),
    "DRUG": lambda: (R.choice(DRUGS), None),
    "MONEY": lambda: (R.choice(["$", "€", "£", ""]) + f"{R.randint(1, 9999)}.{R.randint(0, 99):02d}", None),
}


def email():
    f = fk(latin_only=True)
    r = R.random()
    if r < 0.5:
        base = (first_name() + "." + last_name()).lower()
        base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode().replace(" ", "").replace("'", "")
        return base + "@" + safe(lambda: f.free_email_domain(), "example.com")
    return safe(lambda: f.email(), "someone@example.com")


def phone():
    f = fk(latin_only=True)
    return safe(lambda: f.phone_number(), "555-0100") if R.random() < 0.7 else f"{R.randint(200, 999)}-{R.randint(1000, 9999)}"


def ident():
    return R.choice([f"{R.randint(100000, 99999999)}", f"MRN {R.randint(100000, 9999999)}",
                     f"{acronym(2)}-{R.randint(1000, 99999)}", f"#{R.randint(1000, 999999)}",
                     f"{R.randint(100, 999)}-{R.randint(10, 99)}-{R.randint(1000, 9999)}"])


def url():
    return R.choice(["https://", "http://", "www.", ""]) + safe(lambda: fk(latin_only=True).domain_name(), "example.com") + R.choice(["", "/", "/about", "/login?id=3"])


TECH = """S3 EC2 EKS ECS C4 C5 m5.large t3.micro Lambda DynamoDB Redis Postgres PostgreSQL MySQL SQLite Kafka
Kubernetes k8s Docker Terraform Ansible Jenkins GitHub GitLab Bitbucket Jira Confluence Slack Zoom Python Rust Go
Java JavaScript TypeScript React Angular Vue Svelte Node.js Django Flask FastAPI Spring Rails Laravel NumPy pandas
PyTorch TensorFlow ONNX CUDA AVX2 ARM64 x86_64 Linux Ubuntu Debian Windows macOS iOS Android Chrome Firefox Safari
Excel Word PowerPoint Outlook Teams Gmail OAuth JWT TLS SSL HTTP/2 gRPC REST GraphQL JSON YAML TOML CSV XML HTML CSS
SQL NoSQL BigQuery Snowflake Databricks Spark Hadoop Airflow dbt Tableau PowerBI Looker Salesforce SAP Oracle
GPT-4 LLaMA Mistral Claude Gemini BERT RoBERTa T5 A100 H100 RTX4090 USB-C HDMI Wi-Fi Bluetooth 5G LTE VPN DNS CDN
nginx Apache Tomcat IIS systemd cron bash zsh vim emacs VSCode IntelliJ Xcode npm pip cargo Maven Gradle CMake
v1.2.3 v2 SHA-256 AES-256 RSA-2048 UTF-8 ASCII base64 IPv6 CIDR VLAN RAID5 SSD NVMe DDR5 PCIe Q3 Q4 FY24 KPI OKR ROI
SLA SLO API SDK CLI GUI UX UI MVP PoC PR CI/CD QA UAT ETL CRM ERP HR IT OKRs B2B SaaS PaaS IaaS""".split()

DRUGS = """lasix furosemide lopressor metoprolol vanco vancomycin zosyn flagyl levofloxacin ceftriaxone heparin coumadin
warfarin lovenox propofol fentanyl versed midazolam morphine dilaudid ativan lorazepam haldol tylenol acetaminophen
insulin NPH lantus humalog kcl potassium magnesium mag sulfate calcium gluconate levophed neo neosynephrine dopamine
dobutamine milrinone vasopressin nitro NTG nipride amiodarone diltiazem digoxin captopril lisinopril protonix pantoprazole
pepcid zantac reglan colace senna dulcolax lactulose albuterol atrovent combivent solumedrol prednisone decadron
aspirin ASA plavix integrilin tPA precedex dexmedetomidine narcan ambien trazodone seroquel zyprexa keppra dilantin
phenytoin cipro bactrim acyclovir fluconazole meropenem cefepime gentamicin tobramycin lipitor simvastatin
hydralazine labetalol norvasc zofran phenergan benadryl oxycodone percocet neurontin gabapentin thiamine folate MVI
PRBC FFP platelets albumin NS LR D5W D5NS TPN TF ensure nepro""".split()

ABBR = """PMH HPI S/P s/p CABG NPO PRBC CXR ABG VBG SBP DBP MAP HR RR SAT SpO2 NC FM NRB BS BM OOB DNR DNI CMO PEG NGT OGT
ETT PICC CVL A-line SVT AFIB afib NSR ST PVC PVCs PAC CVP PA PCWP CI SVR IABP TF FS RISS HCT Hct K Mg Ca Phos BUN Cr WBC PLT
INR PTT LFTs CK MB CPK trop UA UO I/O LOS CCU MICU SICU CSRU TSICU NICU ICU ED ER OR PACU EP cath IR CT MRI MRA EEG EKG ECG
TTE TEE echo US KUB LUE RUE LLE RLE LUL RUL RLL LLL PERRL MAE A&O AOx3 GCS RASS CAM ICP CPP EVD VP SDH SAH ICH CVA TIA
MI NSTEMI STEMI CHF COPD DM HTN CAD CKD ESRD HD CVVH CRRT ARDS PNA UTI DVT PE GIB SBO AAA AVR MVR TAVR PCI DES BMS
RCA LAD LCx OM PDA SVG LIMA IVC SVC RA RV LA LV EF LVEF TR MR AS AI PEEP FiO2 PSV CPAP BiPAP SIMV A/C AC VT TV Vt RSBI
PS MDI nebs HHN IS CPT VAP SQ SC IV IVP PO PR SL PRN QD BID TID QID Q4H Q6H QHS HS AM PM am pm NAS NAD WNL HEENT CTA
DOE SOB CP N/V D/C d/c f/u w/ w/o c/o r/o h/o y/o yo pt pts Pt PT OT SW RN MD HO NP PA CNA RT RRT SLP IDDM NIDDM
ROS PE VSS afeb tmax Tmax T/C q2h sm mod lg amt amts sxn suct sx cx gtt gtts mcg mg meq mEq ml cc L/min lpm""".split()

HARD_NEG = ["MAE", "aline", "A-line", "NKDA", "PERRLA", "pearl", "EW", "ED", "hospital", "floor", "unit", "rehab", "home",
            "HO", "team", "attending", "resident", "fellow", "nurse", "RN", "MD", "family", "wife", "husband", "son", "daughter",
            "pt", "Pt.", "PT.", "tonight", "today", "tomorrow", "overnight", "this am", "night", "day", "week", "Monday", "Tuesday",
            "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "weekend", "evening", "afternoon", "midnight", "noon",
            "CXR", "KUB", "ABG", "NGT", "OGT", "PEG", "PICC", "TLC", "IJ", "SC", "L", "R", "B", "Q", "X", "NEURO", "CV", "RESP",
            "GI", "GU", "ID", "ENDO", "HEME", "SKIN", "SOCIAL", "PLAN", "DISPO", "A/P", "ASSESS", "ACCESS", "LINES", "LABS",
            "MEDS", "ALLERGIES", "CODE", "FULL CODE", "VS", "T", "HR", "BP", "RR", "O2", "NC", "FM", "SVN", "MDI", "TF", "IVF"]
EPONYMS = ["Foley", "Swan", "Swan-Ganz", "Hickman", "Glasgow", "Babinski", "Trendelenburg", "Cheyne-Stokes", "Kussmaul",
           "Parkinson's", "Alzheimer's", "Crohn's", "Graves'", "Hodgkin's", "Addison's", "Cushing's", "Bell's palsy",
           "Guillain-Barre", "Hashimoto's", "Wernicke's", "Korsakoff", "Mallory-Weiss", "Whipple", "Nissen", "Roux-en-Y",
           "Levine", "Yankauer", "Miami J", "Ambu", "Jackson-Pratt", "JP", "Penrose", "Blakemore", "Dobhoff", "Groshong",
           "Quinton", "Passy-Muir", "Shiley", "Portex", "Braden", "Morse", "Pyxis", "Lovenox", "Kerlix", "Tegaderm",
           "Duoderm", "Xeroform", "Allevyn", "Mepilex", "Ace wrap", "Velcro", "Heimlich", "Doppler", "Holter", "Bovie"]


def fill(template, case="keep"):
    """Fill a template: {SLOT} placeholders; '[[Dr.|Mr.]]' alternatives; titles around names handled by slots."""
    d = Doc()
    pos = 0
    for m in SLOT_RE.finditer(template):
        d.add(template[pos:m.start()])
        key = m.group(1)
        val, lab = SLOTS[key]()
        d.add(val, lab)
        pos = m.end()
    d.add(template[pos:])
    return d.build(case)


# --------------------------------------------------------------------------------------
# General templates: chat prompts, emails, tickets, forms. Written for this file.

GENERAL = [
    "My name is {PERSON}.", "My name is {PERSON} and I live in {CITY}.", "Hi, I'm {FIRST} from {ORG}.",
    "Please write a short bio for {PERSON}, who was born in {CITY}, {COUNTRY} on {DATE}.",
    "Can you draft a letter to {PERSON} at {ADDR} about the overdue invoice?",
    "Summarize this: {PERSON} met {PERSON} in {CITY} on {DATE} to discuss the {ORG} merger.",
    "{PERSON} ({EMAIL}) reported that the login page is broken since {DATE}.",
    "Contact: {PERSON} <{EMAIL}>", "{EMAIL} {PERSON}", "cc: {PERSON}, {PERSON}, {EMAIL}",
    "Ship to:\n{PERSON}\n{ADDR}", "Billing address: {ADDR}", "I moved to {ADDR} last {MONTH}.",
    "Send the package to {STREET}, {CITY}.", "The address of {ORG} is {ADDR}",
    "{PERSON} is the new head of sales at {ORG} in {LOC}.", "Translate to French: '{PERSON} will arrive on {DATE}.'",
    "Write a poem for my grandmother {FIRST} who turns {AGE} on {DATE}.",
    "Is {CITY} a good place to live? I'm considering a move from {CITY}.",
    "Reminder: dentist appointment with Dr. {LAST} on {DAY} at 3pm.", "Meeting with {PERSON} moved to {DATE}.",
    "{FIRST}, can you review the PR before {DAY}?", "Thanks {FIRST}! See you in {CITY}.",
    "Flight {ID} from {CITY} to {CITY} departs {DATE}.", "Patient {PERSON}, DOB {DATE}, seen at {HOSP} for chest pain.",
    "Please summarize the discharge note for {PERSON} (MRN {ID}) admitted {DATE} to {HOSP}.",
    "Rewrite this referral: Dear Dr. {LAST}, I am referring {PERSON}, a {AGE} year old from {CITY}, for evaluation.",
    "{TITLE} {LAST} called about the lab results from {DATE}.", "Her husband {FIRST} can be reached at {PHONE}.",
    "Call {PERSON} at {PHONE} or email {EMAIL}.", "Employee: {PERSON}\nDepartment: Finance\nStart date: {DATE}\nOffice: {LOC}",
    "Name: {PERSON}\nDOB: {DATE}\nAddress: {ADDR}\nPhone: {PHONE}", "Full name: {PERSON}\nCity: {CITY}\nCountry: {COUNTRY}",
    "{PERSON} listed her favourite books for the {ORG} newsletter.", "The {ORG} was founded in {YEAR} in {CITY}.",
    "Since {YEAR}, {ORG} has grown into a company of {NUM} people serving {LOC}.",
    "{PERSON} works as a {JOB} at {ORG}.", "I'm {PERSON}, a {JOB} living in {LOC}.",
    "Hey {FIRST}, it's {FIRST}. Are we still on for {DAY}?", "{FIRST} and {FIRST} are getting married on {DATE} in {CITY}!",
    "Tenant: {PERSON}, unit at {STREET}. Lease ends {DATE}.", "Wire the refund of {MONEY} to {PERSON}, {ORG}.",
    "Could you help me write a complaint to {ORG} about my order? My name is {PERSON} and the order was placed {DATE}.",
    "Our office at {ADDR} will be closed on {DATE}.", "{PERSON} was promoted to VP at {ORG} in {MONTH} {YEAR}.",
    "Book a table for {FIRST} on {DAY} the {NUM}th.", "Signed, {PERSON}", "Best regards,\n{PERSON}\n{JOB}, {ORG}\n{PHONE}",
    "Regards, {FIRST}", "-- {FIRST} {LAST}", "Student: {PERSON}, Grade 7, {ORG}", "Witness: {PERSON}, residing at {ADDR}.",
    "{PERSON} vs. {ORG}, filed {DATE} in {CITY} district court.", "Visited {LOC} with {FIRST} in {YEAR}.",
    "I need a cover letter for {ORG} in {CITY}; my name is {PERSON}.", "Who is {PERSON}?",
    "What do you know about {ORG}?", "Plan a 3-day trip to {CITY} and {CITY} in {MONTH}.",
    "hi my name is {FIRST} {LAST} and i need help with my account", "this is {FIRST}, i live at {STREET}",
    "Emergency contact: {PERSON} (sister), {PHONE}", "Guardian: {PERSON}", "Attn: {PERSON}, {ORG}, {ADDR}",
    "Customer {PERSON} from {CITY} says the device stopped working on {DATE}.",
    "Ticket #{NUM}: {PERSON} cannot access {TECH} since {DAY}.", "Assigned to {FIRST}. Reporter: {PERSON}.",
    "{LAST}, {FIRST} - {DATE} - {CITY}", "{PERSON};{EMAIL};{CITY};{COUNTRY}", "{PERSON}, {AGE}, {CITY}",
    "Invite {PERSON}, {PERSON} and {PERSON} to the {DAY} sync.", "Born {DATE} in {LOC}.",
    "{PERSON} was last seen near {STREET} on {DATE}.", "The conference takes place in {CITY} from {DATE} to {DATE}.",
    "Dear {TITLE} {LAST},\n\nThank you for your letter of {DATE}.\n\nSincerely,\n{PERSON}",
    "Please update my address from {ADDR} to {ADDR}.", "{PERSON} says hi from {COUNTRY}!",
]

# Sentences with no PII at all, including words that look like names, technical tokens.
NEGATIVE = [
    "What are my options?", "How do I configure an {TECH} bucket with versioning?",
    "Explain the difference between {TECH} and {TECH}.", "Write a {TECH} function that reverses a linked list.",
    "Our {TECH} cluster on {TECH} keeps restarting pods after the upgrade.", "Why is my {TECH} query so slow?",
    "Migrate the {TECH} tables to {TECH} before Q3.", "The C4 instance type is cheaper than {TECH} for this workload.",
    "Set the S3 lifecycle rule to expire objects after 30 days.", "Deploy to EKS with {TECH} and {TECH}.",
    "Give me a recipe for banana bread.", "What is the capital of the moon? Just kidding, explain tides.",
    "Summarize the main points of the attached report.", "Rewrite this paragraph to sound more professional.",
    "How many grams of protein are in an egg?", "Translate 'good morning' into Spanish.",
    "List five tips for better sleep.", "What's the best way to learn linear algebra?",
    "Calculate 15% of 240.", "Is it safe to take {DRUG} with food?", "What is the usual dose of {DRUG}?",
    "Explain how {DRUG} works.", "Will the meeting run long?", "Mark the task as done.", "Bill the client monthly.",
    "The rose garden is in full bloom.", "I hope the weather holds.", "Grace period is 30 days.",
    "Frank feedback helps the team.", "Make sure the river crossing is safe.", "The king of spades beats the jack.",
    "Small changes add up.", "Add a green button to the form.", "Long story short, the build failed.",
    "The white paper covers version {NUM}.", "Press the reset button for 10 seconds.",
    "The patient education leaflet explains {DRUG} side effects.", "Please share the agenda.",
    "Sort the list in descending order.", "How do I fix error code {NUM}?", "My code returns None, why?",
    "Compare plans A, B and C.", "Turn on Wi-Fi and Bluetooth.", "Use UTF-8 everywhere.",
    "Our Q4 OKRs focus on retention.", "Can you explain HIPAA in simple terms?", "What does PHI stand for?",
    "Draft a policy for password rotation.", "The API returns 404 for /users/{NUM}.", "Update the README.",
    "What's the weather usually like in spring?", "Schedule the job daily at 02:00 UTC.",
    "Which is faster, {TECH} or {TECH}?", "The report is due by the end of the week.", "Thank you!",
    "OK, thanks, that worked.", "Good morning team, quick update: the migration is complete.",
    "The Board approved the Annual Budget.", "Please read the Terms of Service and Privacy Policy.",
    "Customer Success will reach out.", "Chapter 3: Results and Discussion", "Table 2 shows the Mean and Standard Deviation.",
    "Section 4.2 of the Employee Handbook applies.", "Click Settings > Security > Two-Factor Authentication.",
    "The Quarterly Business Review is next week.", "Use the Search bar at the top.", "Open the File menu and choose Export.",
    "The patient should take the tablet twice daily with water.", "Normal saline 0.9% 1000 ml over 8 hours.",
    "Side effects include headache, nausea and dizziness.", "Blood pressure goal is below 130/80.", "Take 2 tablets every 6 hours as needed.",
    "HbA1c of 7.2% suggests fair control.", "eGFR 45, adjust dose accordingly.", "Order a CBC, BMP and LFTs.",
    "The ICU team rounds at 8 am.", "Discharge criteria: afebrile 24h, tolerating PO, ambulating.",
    "Error: ECONNREFUSED 127.0.0.1:5432", "Traceback (most recent call last): KeyError: 'name'", "SELECT name, city FROM users WHERE id = 7;",
    "def get_user(name: str) -> User:", "user.first_name = form['first_name']", "Fields: first_name, last_name, street, city, zip, country",
    "The template has placeholders for Name, Address and Date of Birth.", "Enter your full name and address below.",
    "Name:", "Address:", "Date:", "Signature:", "N/A", "TBD", "See attached.", "Happy Monday everyone!"[:0] + "Happy holidays everyone!",
]

# Frames the v5 model misreads (--frames): a name opening a question ("Can <name> cover ..."), a name
# after "the chart/visit of" (read as "Bank of ..."), surnames joined by "and" (read as a law firm),
# and wards named after people, with a number outside the span ("transfer to <Surname> 2"). Written for this file.
FRAMES = False
FRAME_GENERAL = [
    "Can {FIRST} cover the evening shift?", "Could {FIRST} take my shift on {DAY}?", "Can {FIRST} {LAST} join the call?",
    "Is {FIRST} on call tonight?", "Did {FIRST} sign the consent form?", "Will {FIRST} be at the meeting on {DAY}?",
    "Has {PERSON} been discharged yet?", "Tell {FIRST} the results came back normal.", "Why did {FIRST} cancel the visit?",
    "Let {FIRST} know the room is ready.", "Ask {FIRST} whether the labs are back.", "Should {FIRST} fast before the scan?",
    "Please pull up the chart of {PERSON}.", "Notes from the visit of {PERSON} on {DATE}.", "The file of {PERSON} is incomplete.",
    "Summarize the history of {PERSON} for the handover.", "the records of {LAST} and {LAST} were merged by mistake",
    "{LAST} and {LAST} will present the case on {DAY}.", "Forward this to {LAST}, {LAST} and {LAST}.",
    "Rooms 4 and 5: {LAST} and {LAST}, both post-op.", "On the list today: {LAST}, {LAST}, {LAST}.",
    "Thanks to {LAST} and {LAST} for covering.", "Can {FIRST} and {FIRST} swap shifts?",
]
FRAME_CLIN = [
    "transfer to {WARD} {WN} this am", "TRANSFER {WARD} {WN}", "plan: {WARD} {WN} today", "may go to {WARD} {WN} or {UNIT}",
    "bed requested on {WARD} {WN}", "tx to {WARD} when bed avail", "pt to {WARD} {WN} in am", "from {UNIT}/{WARD}/{UNIT} teams",
    "on {WARD} {WN} with HR {V}", "called to {WARD} for report", "transferred to {WARD} {WN} overnight",
    "awaiting bed on {WARD}", "{WARD} {WN} team aware", "pt was on {WARD} {WN} until {CDATE}",
]
UNITS = ["MICU", "SICU", "CCU", "CSRU", "floor", "step down", "rehab", "VICU", "tele", "PACU"]


def ward_number():
    """The floor or unit after a ward's name: not identifying on its own, so outside the span."""
    return R.choice([str(R.randint(1, 12)), str(R.randint(1, 12)), f"{R.randint(2, 9)} {R.choice(['North', 'South', 'East', 'West'])}",
                     f"{R.randint(2, 9)}{R.choice('ABNS')}"])


def general_example():
    r = R.random()
    case = "keep" if R.random() < 0.8 else R.choice(["lower", "upper"])
    if r < 0.72:
        if FRAMES and R.random() < 0.2:
            return fill(R.choice(FRAME_GENERAL), case)
        return fill(R.choice(GENERAL), case)
    if r < 0.92:
        return fill(R.choice(NEGATIVE), case)
    # word-like names in and out of name context
    if R.random() < 0.5:
        t = R.choice(["{w} is coming over later.", "Ask {w} about it.", "Thanks, {w}!", "Dr. {w} will see you now.",
                      "I talked to {w} {l} yesterday.", "{w} said the files are ready."])
        w, l = R.choice(WORDY_FIRST), last_name()
        d = Doc()
        parts = re.split(r"(\{w\}|\{l\})", t)
        for p in parts:
            if p == "{w}":
                d.add(w, "PERSON")
            elif p == "{l}":
                d.add(l, "PERSON")
            else:
                d.add(p)
        return d.build(case)
    w = R.choice(WORDY_FIRST + WORDY_LAST).lower()
    t = R.choice(["The {w} one is better.", "We will {w} it later.", "That is a {w} idea.", "Put it in the {w} box.",
                  "{W} is not the issue here.", "A {w} change in the plan."])
    return fill(t.replace("{w}", w).replace("{W}", w.capitalize()), case)


def email_doc():
    d = Doc()
    fn, ln = first_name(), last_name()
    d.add(R.choice(["Hi ", "Hello ", "Dear ", "Hey ", "Good morning ", "Hi team, ", "To whom it may concern, "]))
    if not d.parts[-1][0].endswith(", "):
        if R.random() < 0.3:
            d.add(R.choice(["Mr. ", "Ms. ", "Dr. ", "Mrs. "]))
            d.add(last_name(), "PERSON")
        else:
            d.add(first_name(), "PERSON")
        d.add(",")
    d.add("\n\n")
    for _ in range(R.randint(1, 3)):
        sent = fill(R.choice(GENERAL + NEGATIVE))
        d.extend(sent).add(" ")
    d.add("\n\n" + R.choice(["Best,", "Thanks,", "Cheers,", "Regards,", "Kind regards,", "--", "Sent from my phone"]) + "\n")
    d.add(f"{fn} {ln}" if R.random() < 0.6 else fn, "PERSON")
    if R.random() < 0.6:
        d.add("\n" + safe(lambda: FAKERS["en_US"].job(), "Manager") + ", ")
        d.add(organization(), "ORGANIZATION")
    if R.random() < 0.4:
        d.add("\n")
        d.add(full_address(), "ADDRESS")
    if R.random() < 0.5:
        d.add("\n" + R.choice(["", "Tel: ", "Mobile: ", "P: "]) + phone())
    if R.random() < 0.4:
        d.add(" | " + email())
    return d.build("keep" if R.random() < 0.9 else "lower")


def table_doc():
    d = Doc()
    cols = R.sample(["name", "city", "date", "email", "phone", "company", "address", "amount", "status", "country"], R.randint(2, 5))
    d.add((", " if R.random() < 0.5 else "\t").join(c.title() for c in cols) + "\n")
    gen = {"name": lambda: (person_full(), "PERSON"), "city": lambda: (city(), "LOCATION"), "date": lambda: (date_free(), "DATE"),
           "email": lambda: (email(), None), "phone": lambda: (phone(), None), "company": lambda: (organization(), "ORGANIZATION"),
           "address": lambda: (street_address(), "ADDRESS"), "amount": lambda: (f"{R.randint(1, 5000)}.{R.randint(0, 99):02d}", None),
           "status": lambda: (R.choice(["open", "closed", "pending", "paid", "active"]), None), "country": lambda: (country(), "LOCATION")}
    sep = R.choice([", ", "\t", " | ", ";"])
    for _ in range(R.randint(2, 6)):
        for i, c in enumerate(cols):
            if i:
                d.add(sep)
            v, l = gen[c]()
            d.add(v, l)
        d.add("\n")
    return d.build()


# --------------------------------------------------------------------------------------
# Synthetic ICU / clinical notes. Most carry no PHI (hard negatives).

def vit():
    return R.choice([
        f"HR {R.randint(50, 130)}", f"hr {R.randint(55, 120)}'s", f"BP {R.randint(85, 180)}/{R.randint(40, 100)}",
        f"SBP {R.randint(80, 170)}-{R.randint(100, 190)}", f"RR {R.randint(10, 32)}", f"sats {R.randint(88, 100)}%",
        f"SpO2 {R.randint(88, 100)}%", f"T {R.randint(96, 102)}.{R.randint(0, 9)}", f"Tmax {R.randint(98, 103)}.{R.randint(0, 9)}",
        f"MAP {R.randint(55, 95)}", f"CVP {R.randint(2, 18)}", f"PAP {R.randint(20, 60)}/{R.randint(8, 30)}",
        f"CI {R.randint(1, 4)}.{R.randint(0, 9)}", f"UO {R.randint(10, 200)}cc/hr", f"I/O {R.randint(500, 3000)}/{R.randint(300, 3000)}",
        f"K {R.randint(3, 5)}.{R.randint(0, 9)}", f"Mg {R.randint(1, 2)}.{R.randint(0, 9)}", f"HCT {R.randint(22, 40)}.{R.randint(0, 9)}",
        f"WBC {R.randint(3, 25)}.{R.randint(0, 9)}", f"BUN/Cr {R.randint(10, 90)}/{R.randint(0, 6)}.{R.randint(0, 9)}",
        f"ABG {R.choice(['7.3', '7.4', '7.2'])}{R.randint(0, 9)}/{R.randint(25, 60)}/{R.randint(55, 300)}",
        f"INR {R.randint(1, 3)}.{R.randint(0, 9)}", f"glucose {R.randint(60, 350)}", f"FS {R.randint(60, 350)}",
        f"pain {R.randint(0, 10)}/10", f"{R.randint(1, 9)}/10 pain", f"GCS {R.randint(3, 15)}", f"RASS {R.randint(-4, 2)}",
        f"PEEP {R.randint(5, 15)}", f"FiO2 {R.choice([40, 50, 60, 100, 35])}%", f"{R.choice(['A/C', 'SIMV', 'CPAP', 'PSV'])} {R.randint(10, 20)}x{R.randint(400, 700)}",
        f"Vt {R.randint(350, 700)}", f"{R.randint(1, 6)}L NC", f"{R.randint(2, 15)} lpm", f"wt {R.randint(45, 140)}.{R.randint(0, 9)} kg",
        f"{R.randint(60, 110)}-{R.randint(90, 140)} SR", f"{R.randint(1, 4)}+ edema", f"PLT {R.randint(20, 450)}", f"LOS {R.randint(1, 30)}",
        f"{R.randint(100, 2000)}cc", f"{R.randint(1, 4)}u PRBC", f"{R.randint(10, 100)}mg IV", f"{R.randint(1, 20)} mcg/kg/min",
        f"{R.randint(1, 12)}/{R.randint(1, 12)} strength", f"1:{R.randint(1, 4)}", f"{R.randint(1, 3)}/{R.randint(3, 4)} assist",
        f"q{R.choice([1, 2, 4, 6, 8])}h", f"x{R.randint(1, 4)}", f"{R.randint(0, 23):02d}{R.choice(['00', '30', '15', '45'])}",
        f"at {R.randint(1, 12)}{R.choice(['am', 'pm', 'AM', 'PM', ''])}", f"{R.randint(10, 60)} min",
        # ranges and ratios that look like dates: "RR 12-18", "PSV 10/5", "strength 5/5"
        f"{R.choice(['RR', 'rr', 'HR', 'PEEP', 'UO', 'CVP', 'resp'])} {R.randint(4, 12)}-{R.randint(13, 31)}",
        f"{R.choice(['PSV', 'CPAP', 'ps', 'Bipap', 'BIPAP'])} {R.randint(5, 20)}/{R.randint(5, 10)}",
        f"{R.choice(['strength', 'grips', 'power'])} {R.randint(3, 5)}/5", f"{R.randint(3, 5)}/5 {R.choice(['strength', 'UE', 'LE', 'bilat'])}",
        f"{R.randint(5, 12)}-{R.randint(13, 30)} {R.choice(['cc/hr', 'mg', 'units', 'mmHg', 'breaths', 'min', 'cm'])}",
        f"{R.randint(1, 12)}/{R.randint(1, 12)} {R.choice(['tabs', 'drops', 'sprays', 'NS', 'dose'])}",
    ])


def typo(word):
    """A nurse's typo: a dropped, doubled or swapped letter."""
    if len(word) < 5 or not word.isalpha():
        return word
    i = R.randint(1, len(word) - 2)
    k = R.random()
    if k < 0.33:
        return word[:i] + word[i + 1:]
    if k < 0.66:
        return word[:i] + word[i] + word[i:]
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def typos(text, rate):
    return " ".join(typo(w) if R.random() < rate else w for w in text.split(" "))


CLIN = {
    "NEURO": ["a+ox3, mae, follows commands", "sedated on {DRUG} at {V}, arousable to voice", "perrl, moves all ext",
              "pt lethargic but oriented x2", "intermittently agitated, {DRUG} given with effect", "no focal deficits, {V}",
              "CAM negative", "pupils equal and reactive, {V}", "denies pain", "c/o HA, tylenol given", "nods appropriately"],
    "CV": ["{V}, {V}, no ectopy", "NSR {V} with occ PVCs", "afib {V}, started on {DRUG} gtt", "{V}, {DRUG} weaned to off",
           "pulses palpable, {V}", "tele SR, {V}", "hypotensive to {V}, bolused 500cc NS", "{V}, {V}, CVP {V}",
           "remains on {DRUG} at {V}", "K repleted for {V}", "cardiac enzymes pending", "EKG unchanged from prior"],
    "RESP": ["LS clear bilat, {V}", "on {V}, {V}, suctioned for thick tan sputum", "extubated at {V} to {V}",
             "coarse BS, {V}, nebs given", "weaning on PSV, {V}, {V}", "CXR with improving infiltrate", "RSBI {V}, plan SBT in am",
             "cough weak, IS encouraged", "ABG {V} on {V}", "trach care done, {V}"],
    "GI": ["abd soft, NT/ND, +BS", "NPO for procedure", "TF at goal {V}", "no BM, colace and senna given", "OGT to LCWS, {V} bilious",
           "tolerating clears", "LFTs trending down", "guaiac neg", "{DRUG} for nausea with good effect"],
    "GU": ["foley draining clear yellow urine {V}", "UO marginal, {V}, lasix given", "BUN/Cr stable", "voiding qs", "cvvh running, {V} removed"],
    "ID": ["{V}, on {DRUG} and {DRUG}", "afebrile, WBC {V}", "cultures pending", "blood cx x2 sent", "contact precautions for MRSA"],
    "SKIN": ["intact", "stage II decub on coccyx, duoderm applied", "incision C/D/I", "{V} edema BLE", "skin warm and dry"],
    "ENDO": ["RISS, FS {V}", "insulin gtt at {V}", "lantus {V} at HS"],
    "HEME": ["HCT {V}, transfused {V}", "heparin gtt, PTT {V}", "plts {V}"],
    "ACCESS": ["R IJ TLC, PIV x2", "L radial a-line", "PICC in RUE", "18g PIV LFA"],
    "SOCIAL": ["family in to visit, updated by RN", "wife called, updated", "no contact from family this shift", "pt lives alone",
               "full code", "DNR/DNI", "daughter at bedside", "SW consult placed", "son called for update"],
    "PLAN": ["cont to monitor", "wean vent as tol", "f/u labs", "possible transfer to floor in am", "cont current plan",
             "keep NPO after MN", "repeat lytes at {V}", "d/c planning", "cath in am", "OOB to chair"],
}


# Free narrative sentences of nursing notes (no PHI). Written for this file.
NARRATIVE = [
    "pt received from ED at {V} via stretcher", "pt resting comfortably in bed at this time", "will continue to monitor closely",
    "pt tolerated procedure well", "family meeting held with team, goals of care discussed", "pt remains intubated and sedated",
    "pt turned and repositioned q2h", "oral care done, HOB > 30 degrees", "pt slept on and off overnight", "no acute events overnight",
    "received pt on {DRUG} gtt at {V}", "pt more alert this afternoon, answering questions appropriately", "pt pulled out PIV, new one placed",
    "restraints on for pt safety, released q2h", "pt med for pain with {DRUG} {V} with relief", "blood sugars covered per sliding scale",
    "pt anxious at times, reassurance given", "pt attempting to get OOB, bed alarm on", "CXR done this am, results pending",
    "echo done at bedside", "lines flushed and patent", "dsg changed, site clean", "awaiting bed on floor", "pt ambulated in hall with PT",
    "pt refused meds this am", "pt c/o nausea, vomited x1 small amt", "tele shows SR with rare PVC", "pt diuresed well to lasix",
    "MD aware of low UO", "team aware, no new orders", "HO notified, will reassess in am", "new orders received and carried out",
    "labs sent, results pending", "emotional support given to pt and family", "pt has no complaints at this time",
    "skin intact except as noted", "pt voiding in urinal", "pt NPO except meds", "pt took sips of water without difficulty",
    "tube feeds held for high residuals", "pt coughing and raising thick secretions", "suctioned via ETT for sm amt white secretions",
    "sedation held for neuro exam", "pt able to follow simple commands, MAE", "pupils 3mm brisk", "pt confused overnight, reoriented frequently",
    "pt seen by ortho, no new recs", "renal following, plan HD tomorrow", "ID following, abx changed", "cards consulted for afib",
    "GI to scope in am", "surgery aware of increasing abd girth", "pain controlled with PCA", "epidural infusing at {V}",
    "chest tube to sx, no air leak", "CT output {V} serosang", "pacer wires capped", "IABP 1:1, augmentation good",
    "bair hugger on for temp {V}", "cooling blanket applied for fever", "pan cultured for temp spike", "lactate trending down",
    "pt on contact precautions", "isolation maintained", "pt with poor appetite, ate 25% of dinner", "ensure supplements given",
    "pt had large loose BM, c diff sent", "rectal tube in place", "wound vac intact with good seal", "JP drain with {V} output",
    "pt is full code per discussion", "pt made DNR today after discussion with family", "plan for trach/PEG next week",
    "pt hopes to go home soon", "spiritual care visited", "interpreter used for assessment", "pt hard of hearing, uses hearing aids",
    "glasses and dentures at bedside", "belongings with family", "transport to CT with RN and RT", "returned from IR without incident",
    "post cath groin site soft, no hematoma", "distal pulses dopplerable", "feet cool to touch, pulses weak", "cap refill < 3 sec",
    "lung sounds diminished at bases", "crackles noted at bases", "expiratory wheezes, nebs given", "pt on bipap overnight",
    "weaned to 40% shovel mask", "sats dropped to {V} with repositioning", "abg drawn and sent", "vent settings unchanged",
]

PHI_SNIPPETS = [
    # (text with slots)
    "Dr. {LAST} aware", "Dr {LAST} in to see pt", "d/w Dr. {LAST}, plan to {P}", "seen by {LAST} from renal", "per Dr {LAST}",
    "covering MD Dr {LAST} notified", "{FIRST} from PT in to see pt", "case manager {FIRST} {LAST} following",
    "wife {FIRST} in to visit", "son {FIRST} called", "daughter {FIRST} {LAST} is HCP", "pt's sister {FIRST} updated",
    "husband {FIRST} at bedside", "family ({FIRST} and {FIRST}) in", "friend {PERSON} visited",
    "transferred from {HOSP}", "trans from {HOSP} on {CDATE}", "pt from {CITY}", "lives in {CITY} with wife",
    "plan d/c to {HOSP} rehab", "will go to {HOSP} when bed avail", "returned from {HOSP}", "admitted to {HOSP} {CDATE}",
    "OSH: {HOSP}", "PCP Dr. {LAST} in {CITY}", "seen at {HOSP} in {YEAR}", "CABG {CDATE}", "MI in {YEAR}", "s/p AVR '{YY}",
    "last dialysis {CDATE}", "surgery {CDATE}", "started {DRUG} on {CDATE}", "f/u with Dr {LAST} on {CDATE}",
    "d/c'd {CDATE}", "prior admit {CDATE} for CHF", "admitted on {CDATE}", "cath {CDATE}", "extubated {CDATE}",
    "planned for {DAY}", "OR on {DAY}", "family meeting {DAY}", "last BM {CDATE}", "PICC placed {CDATE}",
    "pt went to {HOSP} for MRI", "dtr lives in {CITY}, {STATE}", "pt is from {COUNTRY}, speaks little english",
    "works at {ORG}", "vacationing in {CITY} when symptoms began", "was at {HOSP} until {CDATE}",
    "ambulance from {CITY} fire dept", "home address on file: {STREET}",
    "spoke with {FIRST} (wife)", "RN {FIRST} aware", "{FIRST} RN covering", "report given to {FIRST}", "care assumed by {FIRST} {LAST}",
    "attending {LAST} at bedside", "{LAST} team following", "per {FIRST} in pharmacy", "notified Dr. {LAST} of K {V}",
    "wife {FIRST} requests call at home", "nephew {FIRST} is contact", "HCP is {PERSON}", "brother {FIRST} flying in from {CITY}",
    "pt's husband {PERSON} updated by phone", "mother {FIRST} stayed overnight", "{FIRST} and {FIRST} (children) visited",
    "pt known to Dr {LAST} from prior admit", "transfer to {HOSP} on {CDATE}", "came from {HOSP} ED", "rehab at {HOSP}",
    "lives at {HOSP} nursing home", "pt from {CITY} area", "family drove from {CITY} {STATE}", "ETA at {HOSP} {DAY}",
    "last admit {CDATE} at {HOSP}", "since {CDATE}", "on {CDATE} pt had", "dx'd {YEAR}", "CABG in '{YY}", "TKR {YEAR}",
    "appendectomy {YEAR}", "MVA in {YEAR}", "pt born {CDATE}", "plan for surgery {DAY} {CDATE}", "echo {CDATE} EF 35%",
    "per NP {FIRST}", "per {LAST}, will hold", "d/w {LAST} MD", "{LAST}-{LAST} MD at bedside", "reported to {INITLAST}",
    "nsg ({INITLAST} and {INITLAST}) verified", "seen by dr {LAST} before d/c", "f/u w/ dr. {LAST}",
    "son {FIRST} consented for procedure", "grand daughter-{FIRST}", "HCP - {FIRST} {LAST} who lives in {STATE}",
    "sent to {HOSP} for further eval", "transferred to {HOSP} for cath", "pt arrived from {HOSP} via ems", "referred to {HOSP}",
    "will transfer to {HOSP} this am", "followed at {HOSP} by dr {LAST}", "family arrived from {CITY}", "{HOSP} consult for {P}",
    "PMH: CAD, AVR {CDATE}, HTN", "s/p MI {CDATE}, CABG {CDATE}", "CVA in {YEAR}", "renal cell ca {YEAR}, s/p nephrectomy",
    "LBM {CDATE}", "OR {CDATE} for CABG", "culture from {CDATE} pending", "abx {CDATE} - {CDATE}",
]


# --------------------------------------------------------------------------------------
# Clinical hard negatives: the words of nursing and ICU notes that are never PHI but look like
# names or places to a small uncased model — procedures, findings, devices, anatomy, units and
# services, often after "from", "to", "in", "at", "for", often upper-case or misspelled — and
# drug names from the drug lexicon (drug_lexicon.py; --drugs) in medication lists. Written for
# this file from general clinical vocabulary.

CLIN_TERMS = """thoracentesis paracentesis pericardiocentesis bronchoscopy intubation extubation reintubation tracheostomy
trach cardioversion catheterization angioplasty angiogram angiography venogram arteriogram endoscopy colonoscopy EGD ERCP
lumbar puncture LP hemodialysis ultrafiltration plasmapheresis pheresis debridement craniotomy craniectomy laminectomy
thoracotomy sternotomy laparotomy cholecystectomy appendectomy colectomy nephrectomy embolization ablation biopsy
transfusion defibrillation pacing resuscitation sedation paralysis diuresis lavage irrigation suctioning proning
hypotension hypertension tachycardia bradycardia tachypnea apnea hypoxia hypoxemia hypercarbia acidosis alkalosis
hyperkalemia hypokalemia hyponatremia hypernatremia hypoglycemia hyperglycemia hypothermia hyperthermia pyrexia
hypokinesis akinesis dyskinesis effusion infiltrate infiltrates atelectasis pneumothorax hemothorax consolidation edema
anasarca ascites jaundice diaphoresis lethargy agitation delirium confusion somnolence obtundation seizure seizures
hematoma hemoptysis hematuria melena hematochezia hematemesis epistaxis ecchymosis petechiae erythema induration
crepitus stridor wheezing rhonchi rales crackles murmur gallop rub bruit thrill clonus rigidity tremor asterixis
dysphagia dysarthria aphasia hemiparesis hemiplegia paraplegia quadriplegia neglect ptosis nystagmus anisocoria
sepsis bacteremia pneumonia cellulitis abscess empyema endocarditis pericarditis myocarditis meningitis encephalopathy
pancreatitis cholecystitis cholangitis diverticulitis colitis peritonitis ileus obstruction perforation ischemia
infarct infarction stroke aneurysm dissection embolus thrombus thrombosis occlusion stenosis regurgitation vegetation
cirrhosis varices hepatitis nephropathy neuropathy retinopathy cardiomyopathy arrhythmia fibrillation flutter
ventilator vent trach collar venti mask face tent nasal cannula nonrebreather shovel mask ambu bag ETT OETT NETT
triple lumen double lumen cordis introducer sheath swan art line a-line CVL PICC port mediport quinton hickman
foley condom cath rectal tube flexiseal NGT OGT dobhoff PEG PEJ J-tube G-tube chest tube pigtail JP drain hemovac
pacer wires pacemaker ICD AICD balloon pump IABP LVAD impella ECMO CRRT CVVH CVVHD bair hugger arctic sun
telemetry tele monitor pulse ox SCDs venodynes TEDs kinair bed rotoprone trapeze commode bedpan urinal walker
femoral radial brachial subclavian jugular carotid popliteal pedal dorsalis tibial coccyx sacrum sacral heel
occiput flank groin axilla perineum abdomen thorax sternum clavicle scapula pelvis hip knee ankle wrist elbow
bilateral bilat unilateral proximal distal anterior posterior lateral medial superior inferior dependent
serosanguinous sanguinous serous purulent bilious coffee grounds guaiac positive frothy tenacious copious scant
moderate large small thick thin tan yellow white clear cloudy amber concentrated brisk sluggish dusky mottled
pink pale cool warm dry moist intact clean granulating necrotic eschar slough tunneling dehisced approximated
stable unstable improving worsening unchanged afebrile febrile alert oriented lethargic arousable responsive
comfortable anxious restless combative cooperative tearful withdrawn flat calm pleasant appropriate
NSICU MICU SICU CCU CSRU TSICU PACU ICU ED ER OR IR cath lab step down floor telemetry unit rehab hospice
OSH outside hospital nursing home LTAC SNF VNA home services radiology nuclear medicine echo lab EP lab
neurosurgery neurology cardiology nephrology pulmonary hepatology oncology hematology ortho urology psychiatry
vanco zosyn cefazolin ancef unasyn levaquin cipro flagyl vanc gent tobra amp clinda bactrim fluc diflucan
levophed neo vaso dopa dobutamine milrinone nitro nipride esmolol cardizem dilt amio dig heparin lovenox argatroban
propofol versed fentanyl morphine dilaudid ativan haldol precedex ketamine etomidate succ roc vec cisatracurium
insulin lantus humalog regular kcl kphos mag calcium bicarb lasix bumex diamox albumin ffp prbc plts cryo
dextrose D50 D5W NS LR TPN lipids tube feeds promote jevity nepro pulmocare impact osmolite glucerna
reassurance education teaching support comfort hygiene repositioning turning ambulation mobility positioning""".split()
# Phrases a small model reads as a place after a preposition ("IN GOOD SPIRITS", "FROM HOME").
CLIN_PHRASES = ["good spirits", "no distress", "no acute distress", "mild distress", "baseline", "bed", "chair", "home",
                "room air", "RA", "sinus rhythm", "NSR", "SR", "afib", "high spirits", "good control", "pain", "restraints",
                "isolation", "contact precautions", "trendelenburg", "reverse trendelenburg", "fowlers", "semi fowlers",
                "supine", "prone", "left side", "right side", "the unit", "the floor", "the bathroom", "the hallway",
                "the chair", "the commode", "radiology", "the cath lab", "CT scan", "MRI", "dialysis", "surgery", "the OR",
                "step down", "the morning", "the afternoon", "the evening", "the night", "report", "shift change", "rounds",
                "the meeting", "the plan", "agreement", "progress", "the past", "the interim", "transit", "place",
                "good position", "the field", "the ambulance", "the helicopter", "medflight", "the sheath", "the groin"]
DRUG_LEXICON = []  # filled from --drugs
PLAIN_WORDS = []  # filled from --words: English words written only in lower case (word_lexicon.py), 4+ letters
# Languages and nationalities: who a patient is or what they speak, not where (not PHI on their own).
LANGUAGES = """Spanish Portuguese Cantonese Mandarin Vietnamese Russian Ukrainian Polish Haitian Creole Arabic Farsi Persian
Iranian Somali Amharic Tigrinya Swahili Yoruba Hindi Urdu Punjabi Bengali Gujarati Tagalog Korean Japanese Greek Italian
Albanian Armenian Hmong Khmer Lao Thai Burmese Nepali Turkish Hebrew Yiddish French German ASL""".split()
LANG_TEMPLATES = ["speaks {L}", "{L} speaking", "{L}-speaking", "{L} interpreter", "interpreter ({L})", "primary language {L}",
                  "speaks only {L}", "yelling in {L}", "{L} speaking only", "uses {L} interpreter", "understands some {L}"]


def plain_negative():
    """One to three everyday English words (4+ letters) from the word lexicon, a quarter misspelled: in
    all-caps notes and after prepositions a small model reads unfamiliar ordinary words as names."""
    v = " ".join(R.choice(PLAIN_WORDS) for _ in range(R.choice([1, 1, 2, 2, 3])))
    v = typos(v, 0.5) if R.random() < 0.25 else v
    return v[:1].upper() + v[1:] if R.random() < 0.3 else v
CLIN_NEG_TEMPLATES = [
    "from {T}", "FROM {T}", "to {T}", "transferred to {T}", "sent to {T}", "in {T}", "IN {T}", "at {T}", "for {T}",
    "s/p {T}", "S/P {T}", "r/o {T}", "? {T}", "{T} done", "{T} today", "{T} this am", "plan {T}", "{T} in am",
    "{T} and {T}", "{T}, {T}", "{T} / {T}", "{T}- {T}", "no {T}", "+ {T}", "? {T} vs {T}", "{T} noted", "{T} present",
    "c/o {T}", "h/o {T}", "with {T}", "after {T}", "post {T}", "pre {T}", "{T} consulted", "{T} aware", "d/w {T}",
    "pt remains in {P}", "pt in {P}", "resting in {P}", "pt at {P}", "returned from {P}", "out of {P}", "back to {P}",
    "MEDS: {D}, {D}, {D}", "{D}---{D}", "{D}--{D}--{D}", "{D}/{D}", "started {D} gtt", "on {D} {DOSE}", "{D} {DOSE} IV",
    "{D} {DOSE} PO", "{D} {DOSE} q{H}h", "d/c'd {D}", "{D} d/c'd", "allergic to {D}", "ALLERGIES: {D}, {D}",
    "home meds include {D} and {D}", "{D} held", "{D} increased to {DOSE}", "restarted {D}", "given {D} with effect",
    "switched from {D} to {D}", "{D} level {DOSE}", "? {D} reaction", "on {D} and {D} gtts", "{D} at {DOSE}",
]


# --charting (since v9): more of the vocabulary of charting that a small uncased model reads as a
# name or place — wound-care and line products, charting systems and shift words, services and
# their short forms, pronouns in notes that never capitalise, street-like words in bedside
# phrases ("edge of bed") and numbers after "in/to/at" — written for this file from general
# nursing vocabulary, plus (run.sh) a larger English word list for the everyday-word negatives.
CHARTING = False
CHARTING_TERMS = """tegaderm duoderm mepilex allevyn aquacel xeroform xerofoam gelfoam surgicel telfa kerlix kling coban
steri-strips dermabond betadine chlorhexidine chloraprep hibiclens bacitracin silvadene santyl calmoseptine criticaid
desitin sween aloe barrier cream adaptic vaseline gauze abd pad wet-to-dry dakins iodoform packing hydrocolloid
alginate foam dressing opsite bioclusive permacath groshong portacath port-a-cath mediport trialysis
vascath mahurkar broviac cordis shiley bivona portex passy-muir dobhoff corpak keofeed sump yankauer
ambu venturi venti bipap cpap optiflow vapotherm heliox nebulizer flutter valve acapella incentive spirometer
flowsheet careview carevue kardex MAR eMAR POE CPOE chart charting documentation addendum flow sheet pyxis omnicell
noc midnoc overnoc nite tonite tmrw days nights evening shift night shift day shift handoff huddle
derm pulm neuro nsurg neurosurg neuro surg ct surg cardiac surg vasc surg gen surg plastics ENT ophtho optho uro
gyn onc heme renal cards cardiac GI ID psych PT OT ST SW CM RT nutrition dietary pharmacy chaplain chaplaincy pastoral
care social work case management palliative transplant wound care ostomy nurse IV team rapid response code team
hoyer lift sling stedy stand slide board gait belt bed alarm chair alarm vest mitts soft restraints
sitter bedside commode camode urinal condom cath purewick external cath straight cath bladder scan
xray x-ray ultrasound doppler duplex ct scan cta mri mra pet scan bone scan hida scan v/q scan swallow study barium
bronch scope egd tee cath lab ir drain pigtail chest tube pleurx thoracic surgery
antecubital brachial cephalic basilic forearm hand wrist upper arm lower leg dorsal plantar palmar""".split()
CHARTING_PHRASES = ["edge of bed", "the edge of the bed", "side of bed", "side rails", "upper airway", "upper lobe",
                    "middle lobe", "lower lobe", "high risk", "high fowlers", "high flow", "low flow", "most of the shift",
                    "most of the day", "much of the night", "the upper 90s", "the high 80s", "the low 100s", "mid 90s",
                    "good effect", "little effect", "bed pan", "the bedside", "the dayroom", "the hall", "the sink",
                    "hospice care", "long term care", "skilled nursing", "acute rehab", "home with services"]
PRONOUN_NOTES = ["he is resting comfortably", "she remains on {V}", "he'll need pt and possibly rehab", "she is oriented x3",
                 "he denies pain", "he was given {DRUG} with good effect", "she states she feels better", "he c/o nausea",
                 "she was turned q2h", "he is moving all extremities", "she tolerated the procedure", "he refused his meds",
                 "he's been calm", "she'd like to speak to the team", "his wife called", "her son visited", "him and his family",
                 "he has been in {V}", "she ate 50% of her dinner", "he and his daughter discussed goals of care"]
NUMBER_NOTES = ["running in the {N}'s", "rate in {N}'s", "sbp in {N}'s-{N}'s", "weaned from {N} to {N}", "up to {N}",
                "transfer at {HH}", "to {HH} when", "at {HH} and {HH}", "in {N}s with occ pvc", "hr to {N}", "down to {N}"]


def charting_negative():
    """A PHI-free fragment of --charting vocabulary (CHARTING_TERMS, CHARTING_PHRASES, PRONOUN_NOTES, NUMBER_NOTES)."""
    r = R.random()
    if r < 0.2:
        t = R.choice(PRONOUN_NOTES).replace("{V}", vit()).replace("{DRUG}", R.choice(DRUGS))
    elif r < 0.32:
        t = R.choice(NUMBER_NOTES)
        while "{N}" in t or "{HH}" in t:
            t = t.replace("{N}", str(R.randint(4, 19) * 10), 1).replace("{HH}", f"{R.randint(0, 23):02d}{R.choice(['00', '15', '30', '45', '05'])}", 1)
    elif r < 0.55:
        t = R.choice(["at ", "to ", "in ", "from ", "out of ", "back to ", "sitting on ", "OOB to ", "by ", "near ", "at the "]) + R.choice(CHARTING_PHRASES)
    else:
        v = " ".join(R.choice(CHARTING_TERMS) for _ in range(R.choice([1, 1, 2, 2, 3])))
        v = typos(v, 0.4) if R.random() < 0.25 else v
        t = R.choice(CLIN_NEG_TEMPLATES[:36] + ["per {T}", "see {T}", "refer to {T}", "as per {T}", "via {T}", "covered with {T}",
                                                 "tx with {T}", "placed on {T}", "confirmed by {T}", "seen by {T}", "{T} consult"]).replace("{T}", v)
        t = re.sub(r"\{\w+\}", lambda m: v, t)
    return t[:1].upper() + t[1:] if R.random() < 0.2 else t

def drug_word():
    if DRUG_LEXICON and R.random() < 0.7:
        w = R.choice(DRUG_LEXICON)
    else:
        w = R.choice(DRUGS)
    return typo(w) if R.random() < 0.15 else w


def clinical_negative():
    """A PHI-free clinical fragment built from CLIN_TERMS, CLIN_PHRASES, drug names, everyday words and languages."""
    if PLAIN_WORDS and R.random() < 0.06:
        return R.choice(LANG_TEMPLATES).replace("{L}", R.choice(LANGUAGES))
    t = R.choice(CLIN_NEG_TEMPLATES)
    out, pos = [], 0
    for m in SLOT_RE.finditer(t):
        out.append(t[pos:m.start()])
        k = m.group(1)
        if k == "T" and PLAIN_WORDS and R.random() < 0.3:
            v = plain_negative()
        elif k == "T":
            v = " ".join(R.choice(CLIN_TERMS) for _ in range(R.choice([1, 1, 1, 2, 2, 3])))
            v = typos(v, 0.5) if R.random() < 0.25 else v
        elif k == "P":
            v = R.choice(CLIN_PHRASES)
        elif k == "D":
            v = drug_word()
        elif k == "DOSE":
            v = R.choice([f"{R.randint(1, 500)}mg", f"{R.randint(1, 20)} mcg/kg/min", f"{R.randint(1, 40)}u",
                          f"{R.choice([0.5, 1, 2, 4, 5, 10])} mg", f"{R.randint(1, 30)} units/hr", f"{R.randint(5, 200)}cc/hr"])
        else:  # H
            v = str(R.choice([2, 4, 6, 8, 12, 24]))
        out.append(v)
        pos = m.end()
    out.append(t[pos:])
    return "".join(out)


def clinical_phrase(with_phi):
    sec = R.choice(list(CLIN))
    t = R.choice(CLIN[sec])
    return sec, t


def fill_clin(t, d):
    """Append a clinical template with {V} vitals, {DRUG}, {P} and PHI slots to Doc d."""
    pos = 0
    for m in SLOT_RE.finditer(t):
        d.add(t[pos:m.start()])
        k = m.group(1)
        if k == "V":
            d.add(vit())
        elif k == "DRUG":
            d.add(R.choice(DRUGS))
        elif k == "P":
            d.add(R.choice(CLIN["PLAN"]).replace("{V}", vit()))
        elif k == "YY":
            d.add(f"{R.randint(0, 99):02d}", "DATE")
        else:
            v, lab = SLOTS[k]()
            if k in ("LAST", "FIRST") and R.random() < 0.05:
                v = initial()
            d.add(v, lab)
        pos = m.end()
    d.add(t[pos:])


def phi_snippet():
    if FRAMES and R.random() < 0.15:
        return R.choice(FRAME_CLIN)
    return R.choice(PHI_SNIPPETS)


def signature(d):
    fn, ln = first_name(), last_name()
    r = R.random()
    if r < 0.3:
        d.add(f"{fn[0]}. ", "PERSON"); d.add(ln, "PERSON")
    elif r < 0.6:
        d.add(f"{fn} {ln}", "PERSON")
    elif r < 0.8:
        d.add(ln, "PERSON")
    else:
        d.add(fn, "PERSON")
    d.add(R.choice([" RN", ", RN", " RRT", " R.N.", " MD", " NP", "", " SN", " PT"]))


def clinical_note(phi):
    d = Doc()
    style = R.random()
    header = R.choice(["", "NPN 7p-7a\n", "Nursing Progress Note\n", "RESP CARE\n", "CCU NPN:\n", "MICU NURSING NOTE\n",
                       "Nursing Note 0700-1900\n", "Respiratory Care Note: ", "NURSING ADMIT NOTE\n", "Addendum: ", "Neonatology\n",
                       "Pt is a {AGE} y/o {SEX} adm with {DX}.\n"])
    header = header.replace("{AGE}", str(R.randint(18, 95))).replace("{SEX}", R.choice(["M", "F", "male", "female", "gentleman", "woman"])).replace(
        "{DX}", R.choice(["CHF exacerbation", "sepsis", "GIB", "PNA", "s/p CABG x3", "NSTEMI", "COPD flare", "ICH", "DKA", "resp failure"]))
    d.add(header)
    n_sec = R.randint(1, 8)
    phi_budget = R.randint(1, 6) if phi else 0
    secs = R.sample(list(CLIN), min(n_sec, len(CLIN)))
    for s in secs:
        sep = R.choice([": ", "- ", ":", " - ", "-", ". "])
        d.add(("\n" if R.random() < 0.7 else " ") + (s if R.random() < 0.8 else s.lower()) + sep)
        k = R.randint(1, 4)
        for j in range(k):
            if phi_budget and R.random() < 0.4:
                fill_clin(phi_snippet(), d)
                phi_budget -= 1
            else:
                t = R.choice(CLIN[s]) if R.random() < 0.6 else R.choice(NARRATIVE)
                if R.random() < 0.3:
                    t = charting_negative() if CHARTING and R.random() < 0.4 else clinical_negative()
                if R.random() < 0.12:
                    t = t + " " + R.choice(EPONYMS) + R.choice([" in place", " intact", " d/c'd", " changed", "", " draining"])
                if R.random() < 0.35:
                    t = t + R.choice([", ", " ", ". ", "; "]) + R.choice(ABBR + HARD_NEG) + " " + vit()
                if R.random() < 0.2:
                    t = R.choice(HARD_NEG + ABBR) + " " + t
                if R.random() < 0.25:
                    t = typos(t, 0.15)
                fill_clin(t, d)
            d.add(R.choice([", ", ". ", "; ", ".  ", " ", ",", "\n"]) if j < k - 1 else R.choice([".", "", ". ", "\n", " \n"]))
    while phi_budget:
        d.add(R.choice([" ", "\n", ". "]))
        fill_clin(phi_snippet(), d)
        phi_budget -= 1
    if (phi and R.random() < 0.5) or (not phi and False):
        d.add(R.choice(["\n", "\n\n", " ", "\n \n"]))
        signature(d)
    elif not phi and R.random() < 0.3:
        d.add(R.choice(["\nRN", "\n-RN", "\nSee flowsheet for details.", "\nWill cont to monitor.", "\nMD aware.", "\nTeam aware."]))
    case = "upper" if style < 0.4 else ("lower" if style < 0.6 else "keep")
    return d.build(case)


def short_clinical(phi):
    """One- or two-line clinical snippets as typed into a chat box."""
    d = Doc()
    if phi:
        fill_clin(R.choice([
            "Summarize: {PERSON}, {AGE}M, adm {CDATE} w/ {DX}; PMH HTN, DM; meds {DRUG}, {DRUG}.",
            "pt {LAST} in bed {NUM} c/o SOB, {V}, {V}; Dr. {LAST} paged",
            "Write a discharge summary for {PERSON} (DOB {DATE}), seen at {HOSP} for {DX}.",
            "{FIRST} {LAST} {AGE}yo F s/p fall at home in {CITY}, CT head neg",
            "Pt {PERSON} transferred from {HOSP} on {CDATE} for cath.",
            "Referral letter: Dr. {LAST}, re: {PERSON}, {ADDR}.",
            "Can you explain these labs for my mom {FIRST}? {V}, {V}, {V}",
            "Patient: {PERSON} | MRN: {ID} | Admit: {DATE} | Attending: Dr. {LAST}",
        ]).replace("{DX}", R.choice(["CHF", "PNA", "sepsis", "COPD", "afib w RVR", "GIB", "DKA"])), d)
    else:
        fill_clin(R.choice([
            "What is the max dose of {DRUG} in renal failure?", "pt c/o SOB, {V}, {V}, what should I check?",
            "Explain {DRUG} vs {DRUG} for afib rate control.", "Summarize: {AGE}M adm w/ CHF, PMH HTN, DM; on {DRUG}, {V}.",
            "Is {V} with {V} concerning post CABG?", "Convert {DRUG} {V} to PO equivalent.", "Write a SOAP note template for ICU.",
            "Differential for {V} and {V} in a septic pt?", "How to titrate {DRUG} gtt, {V}?",
            "Interpret ABG {V} on {V}.", "What does S/P CABG x3 with LIMA to LAD mean?", "Pt on {DRUG} and {DRUG}, any interaction?",
        ]).replace("{AGE}", str(R.randint(20, 95))), d)
    if R.random() < 0.3:
        d.add(R.choice([" ", "; ", ", ", "\n"]) + (charting_negative() if CHARTING and R.random() < 0.4 else clinical_negative()))
    return d.build("keep" if R.random() < 0.6 else R.choice(["upper", "lower"]))


# --------------------------------------------------------------------------------------
# Public sentence templates: presidio-evaluator's templates.txt (MIT, PyPI wheel
# presidio-evaluator==0.3.2; run.sh fetches it when PUBLIC_TEMPLATES=1, nothing is committed). Its {{placeholders}} are filled
# with this file's generators. Every fifth template (line number divisible by 5) is held out and
# never used, so records built from those templates measure generalization (template_split.py).

PUBLIC_TEMPLATES = []
PT_ADDRESS_PARTS = {"building_number", "street_name", "secondary_address", "address", "postcode", "zipcode",
                    "city", "country", "state_abbr"}
PT_ADDRESS_STARTS = {"building_number", "street_name", "secondary_address", "address"}
PT_RE = re.compile(r"\{\{(\w+)\}\}")
NATIONALITIES = ["American", "British", "French", "German", "Italian", "Spanish", "Mexican", "Brazilian", "Japanese",
                 "Chinese", "Korean", "Indian", "Nigerian", "Kenyan", "Swedish", "Polish", "Turkish", "Greek", "Irish", "Dutch",
                 "Thai", "Vietnamese", "Ethiopian", "Lebanese", "Peruvian", "Canadian", "Australian", "Icelandic"]


def load_public_templates(path):
    for i, line in enumerate(open(path, encoding="utf-8", errors="replace"), 1):
        t = line.rstrip("\n")
        if i % 5 == 0 or not t.strip():
            continue
        PUBLIC_TEMPLATES.append(t.replace("\\n", "\n").replace("\\,", ","))


def pt_value(key):
    """(text, label) for one presidio-evaluator placeholder; None label = outside (pattern tier or neutral)."""
    f = fk(latin_only=R.random() < 0.9)
    if key in ("person", "name", "name_female", "name_male"):
        v = person_full() if R.random() < 0.6 else f"{first_name()} {last_name()}"
        return v, "PERSON"
    if key.startswith("first_name"):
        return first_name(), "PERSON"
    if key.startswith("last_name"):
        return last_name(), "PERSON"
    if key.startswith("prefix"):
        return R.choice(TITLES), None
    if key == "city":
        return city(), "LOCATION"
    if key == "country":
        return country(), "LOCATION"
    if key == "state_abbr":
        return safe(lambda: FAKERS["en_US"].state_abbr(), "MD"), "LOCATION"
    if key == "organization":
        return organization(), "ORGANIZATION"
    if key == "address":
        return full_address(), "ADDRESS"
    if key == "street_name":
        return (street_address() if R.random() < 0.5 else safe(lambda: f.street_name(), "Main Street")), "ADDRESS"
    if key == "building_number":
        return safe(lambda: f.building_number(), str(R.randint(1, 9999))), "ADDRESS"
    if key == "secondary_address":
        return R.choice([f"Apt. {R.randint(1, 999)}", f"Suite {R.randint(1, 999)}", f"Unit {R.randint(1, 99)}",
                         f"Floor {R.randint(1, 30)}", f"P.O. Box {R.randint(10, 9999)}"]), "ADDRESS"
    if key in ("postcode", "zipcode"):
        return safe(lambda: f.postcode(), str(R.randint(10000, 99999))), "ADDRESS"
    if key in ("year",):
        return str(R.randint(1900, 2030)), "DATE"
    if key in ("date_time", "date_of_birth"):
        return date_free(), "DATE"
    if key == "day_of_week":
        return R.choice(DAYS), None
    if key.startswith("nation"):
        return R.choice(NATIONALITIES), None
    if key == "age":
        return str(R.randint(1, 99)), None
    if key == "job":
        return safe(lambda: FAKERS["en_US"].job(), "engineer"), None
    fillers = {"credit_card_number": lambda: safe(lambda: f.credit_card_number(), "4111 1111 1111 1111"),
               "iban": lambda: safe(lambda: f.iban(), "DE89370400440532013000"), "phone_number": phone, "email": email,
               "url": url, "ip_address": lambda: safe(lambda: f.ipv4(), "10.0.0.1"),
               "ssn": lambda: f"{R.randint(100, 899)}-{R.randint(10, 99)}-{R.randint(1000, 9999)}",
               "us_driver_license": lambda: f"{initial()}{R.randint(1000000, 99999999)}"}
    return fillers.get(key, lambda: str(R.randint(1, 999)))(), None


def public_template():
    """A filled presidio-evaluator template. Runs of address parts separated only by spaces, commas,
    line breaks and quote marks become one ADDRESS span (a city or country on its own is a LOCATION)."""
    t = R.choice(PUBLIC_TEMPLATES)
    parts, pos = [], 0
    for m in PT_RE.finditer(t):
        parts.append((t[pos:m.start()], None, None))
        v, lab = pt_value(m.group(1))
        parts.append((v, lab, m.group(1)))
        pos = m.end()
    parts.append((t[pos:], None, None))
    # merge address runs
    out, i = [], 0
    while i < len(parts):
        text, lab, key = parts[i]
        if key in PT_ADDRESS_STARTS:
            j, run = i, [text]
            while j + 2 < len(parts) and parts[j + 2][2] in PT_ADDRESS_PARTS and re.fullmatch(r"[\s,>?]*", parts[j + 1][0]):
                run += [parts[j + 1][0], parts[j + 2][0]]
                j += 2
            out.append(("".join(run), "ADDRESS"))
            i = j + 1
            continue
        out.append((text, lab))
        i += 1
    d = Doc()
    for text, lab in out:
        d.add(text, lab)
    return d.build("keep" if R.random() < 0.85 else R.choice(["lower", "upper"]))


# --------------------------------------------------------------------------------------

def example():
    r = R.random()
    if r < 0.30:
        return clinical_note(phi=R.random() < 0.5)
    if r < 0.40:
        return short_clinical(phi=R.random() < 0.5)
    if PUBLIC_TEMPLATES and r < 0.50:
        return public_template()
    if r < 0.80:
        return general_example()
    if r < 0.92:
        return email_doc()
    return table_doc()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", required=True)
    ap.add_argument("--templates", help="presidio-evaluator templates.txt (optional; 10%% of examples when given)")
    ap.add_argument("--drugs", help="drug lexicon, one name per line (drug_lexicon.py): more hard negatives in clinical text")
    ap.add_argument("--frames", action="store_true", help="names and wards in the frames the v5 model misreads (FRAME_GENERAL, FRAME_CLIN)")
    ap.add_argument("--charting", action="store_true", help="more charting vocabulary as hard negatives (charting_negative)")
    ap.add_argument("--words", help="word lexicon, one word per line (word_lexicon.py): everyday words as hard negatives")
    a = ap.parse_args()
    if a.templates:
        load_public_templates(a.templates)
    if a.drugs:
        DRUG_LEXICON.extend(w.strip() for w in open(a.drugs, encoding="utf-8") if w.strip())
    if a.words:
        PLAIN_WORDS.extend(w.strip() for w in open(a.words, encoding="utf-8")
                           if len(w.strip()) >= 4 and not w.startswith("#"))
    global FRAMES, CHARTING
    FRAMES = a.frames
    CHARTING = a.charting
    R.seed(a.seed)
    Faker.seed(a.seed)
    init_fakers(a.seed)
    n_spans = 0
    with open(a.out, "w", encoding="utf-8") as f:
        for i in range(a.n):
            ex = example()
            for s in ex["spans"]:
                assert 0 <= s["start"] < s["end"] <= len(ex["text"]), ex
            n_spans += len(ex["spans"])
            f.write(json.dumps(ex, ensure_ascii=False) + "\n")
    print(f"wrote {a.n} examples, {n_spans} spans to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
