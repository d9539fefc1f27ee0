/* gateway/scan/_triggers.h: the shape triggers found by a C walk over the text, included
by _hyperscan.c.

Purpose. Hyperscan runs the shapes' triggers (gateway/scan/shapes.py) as one database,
and most of its time went to the triggers led by a digit or a capital: a class such as
`\d` or `[a-z]` gives its literal matcher nothing to skip with, so its automata ran at
every digit and every space, and the short titles before a name ("M.", "Nom", "Dr")
fire at every such word. On a dense 2 KB lab order those fifteen shapes cost ~80k of the
database's 85k instructions. Each of their triggers is a short run of classes or words
whose every position is decided by the character there, so a walk over the bytes that
stops at a digit, a "+" and a capital after a space finds the same hits for less (and,
timed, for less still: ~6 % of a dense order's scan and rewrite).

Contract:
- `triggers_init()` fills the tables, once, before any scan.
- `trigger_kind(name)`: the index of the shape named `name` ("nir", "street", ...: the
  ShapeName values) among TRIGGER_KINDS, or -1 when none is built here.
- `find_triggers(ids, text, length, sink, context)` calls `sink(context, id, start,
  end)` once for each hit Hyperscan would report for the shape's trigger expressions
  (`Shape.trigger` and `Shape.extra_triggers`, or `Shape.pattern` for a shape with no
  trigger) compiled as shapes.py writes them, with HS_FLAG_SOM_LEFTMOST (and
  HS_FLAG_CASELESS where the shape is caseless): every (leftmost start, end) of a match.
  `ids[kind]` is the id hits of that kind carry; a kind whose id is negative is skipped.
  Hits come in no set order (the caller sorts them). Returns 0, or -1 as soon as `sink`
  does.
- tests/scan/test_triggers_native.py checks every kind against Hyperscan on generated
  texts: the same hits.

Invariants. Reads only text[0:length]; a position past the end reads as NUL (a
non-word character, as Hyperscan's `\b` treats the end of the data). ASCII semantics:
`\d` is 0-9, `\b` is a change between [A-Za-z0-9_] and anything else, caseless folds
A-Z only. For each kind, the position of the hit's first character fixes every later
character's role (no optional part can also be read as the next one), so a start has at
most one end per expression and an end one start: the walk matches forward from each
possible start (a title, back from the space after it), with no backtracking. In the
word lists (street types, months, age units), no word followed by a non-word character
is the start of another ("rond" would be, of "rond-point"), so at most one matches at a
position. The lists are shapes.py's, copied: tests/scan/test_triggers_native.py reads
every word and title of shapes.py in context against Hyperscan.
*/
#ifndef PORTIQUE_TRIGGERS_H
#define PORTIQUE_TRIGGERS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum {
    TRIGGER_NIR,
    TRIGGER_IBAN,
    TRIGGER_PHONE_FR,
    TRIGGER_PHONE_INTL,
    TRIGGER_DATE_NUMERIC,
    TRIGGER_DATE_ISO,
    TRIGGER_DATE_WORDS,
    TRIGGER_STREET,
    TRIGGER_AGE,
    TRIGGER_POSTCODE_TOWN,
    TRIGGER_UPPER_FIRST,
    TRIGGER_FIRST_UPPER,
    TRIGGER_CIVILITY_NAME,
    TRIGGER_INTRO_NAME,
    TRIGGER_DOCTOR,
    TRIGGER_KINDS
};

static const char *const trigger_names[TRIGGER_KINDS] = {
    "nir",        "iban",         "phone_fr",    "phone_intl",    "date_numeric",
    "date_iso",   "date_words",   "street",      "age",           "postcode_town",
    "upper_first", "first_upper", "civility_name", "intro_name",  "doctor",
};

typedef int (*TriggerSink)(void *context, unsigned int id, size_t start, size_t end);

static int trigger_kind(const char *name)
{
    for (int kind = 0; kind < TRIGGER_KINDS; kind++) {
        if (strcmp(name, trigger_names[kind]) == 0) {
            return kind;
        }
    }
    return -1;
}

/* Character classes, one bit each. */
#define T_DIGIT 1
#define T_UPPER 2
#define T_LOWER 4
#define T_WORD 8 /* \w: letters, digits, "_" */
#define T_NIR_SEP 16 /* [ .-] */
#define T_DATE_SEP 32 /* [/.-] */
#define T_ALNUM (T_DIGIT | T_UPPER | T_LOWER)

static unsigned char trigger_classes[256];

static void trigger_classes_fill_table(void)
{
    for (int c = '0'; c <= '9'; c++) {
        trigger_classes[c] = T_DIGIT | T_WORD;
    }
    for (int c = 'A'; c <= 'Z'; c++) {
        trigger_classes[c] = T_UPPER | T_WORD;
        trigger_classes[c + 32] = T_LOWER | T_WORD;
    }
    trigger_classes['_'] = T_WORD;
    trigger_classes[' '] = T_NIR_SEP;
    trigger_classes['.'] = T_NIR_SEP | T_DATE_SEP;
    trigger_classes['-'] = T_NIR_SEP | T_DATE_SEP;
    trigger_classes['/'] = T_DATE_SEP;
}

typedef struct {
    const unsigned char *text;
    size_t length;
} TriggerText;

/* The byte at `i`, NUL past the end. */
static inline unsigned char trigger_at(const TriggerText *t, size_t i)
{
    return i < t->length ? t->text[i] : 0;
}

static inline int trigger_is(const TriggerText *t, size_t i, int classes)
{
    return (trigger_classes[trigger_at(t, i)] & classes) != 0;
}

/* Whether text[i:i+length] is `word` (lower case), read caselessly. */
static int trigger_word_at(const TriggerText *t, size_t i, const char *word, size_t length)
{
    if (i + length > t->length) {
        return 0;
    }
    for (size_t k = 0; k < length; k++) {
        unsigned char c = t->text[i + k];
        if ((trigger_classes[c] & T_UPPER) != 0) {
            c = (unsigned char)(c + 32);
        }
        if (c != (unsigned char)word[k]) {
            return 0;
        }
    }
    return 1;
}

typedef struct {
    const char *text; /* lower case */
    size_t length;
} TriggerWord;

#define TRIGGER_WORD(text) {(text), sizeof(text) - 1}

/* Per list of words and per letter, the words that open with it (bit k for words[k]),
   filled once (triggers_init): a look-up skips the words that cannot match. */
typedef struct {
    const TriggerWord *words;
    uint32_t by_first[26];
} TriggerWords;

static void trigger_words_fill(TriggerWords *list)
{
    for (size_t k = 0; list->words[k].text != NULL; k++) {
        list->by_first[list->words[k].text[0] - 'a'] |= (uint32_t)1 << k;
    }
}

/* Where the word of `list` (caseless, then a word boundary) that starts at `i` ends, or
   0 (no word is empty). At most one does: no listed word followed by a non-word
   character is the start of another (see the invariants). Always inlined: as a call
   from its three readers it cost a dense order ~3k instructions more. */
static inline __attribute__((always_inline)) size_t
trigger_word_end(const TriggerText *t, size_t i, const TriggerWords *list)
{
    unsigned char first = trigger_at(t, i);
    if (!(trigger_classes[first] & (T_UPPER | T_LOWER))) {
        return 0;
    }
    uint32_t candidates = list->by_first[(first | 0x20) - 'a'];
    while (candidates != 0) {
        const TriggerWord *word = &list->words[__builtin_ctz(candidates)];
        candidates &= candidates - 1;
        if (trigger_word_at(t, i, word->text, word->length)
            && !trigger_is(t, i + word->length, T_WORD)) {
            return i + word->length;
        }
    }
    return 0;
}

/* shapes._STREET_TYPES, and the months of shapes._MONTHS. */
static const TriggerWord trigger_street_type_words[] = {
    TRIGGER_WORD("rue"),        TRIGGER_WORD("avenue"),     TRIGGER_WORD("av"),
    TRIGGER_WORD("bd"),         TRIGGER_WORD("boulevard"),  TRIGGER_WORD("chemin"),
    TRIGGER_WORD("allee"),      TRIGGER_WORD("place"),      TRIGGER_WORD("impasse"),
    TRIGGER_WORD("route"),      TRIGGER_WORD("quai"),       TRIGGER_WORD("cours"),
    TRIGGER_WORD("square"),     TRIGGER_WORD("residence"),  TRIGGER_WORD("lotissement"),
    TRIGGER_WORD("voie"),       TRIGGER_WORD("passage"),    TRIGGER_WORD("cite"),
    TRIGGER_WORD("hameau"),     TRIGGER_WORD("sentier"),    TRIGGER_WORD("faubourg"),
    TRIGGER_WORD("promenade"),  TRIGGER_WORD("esplanade"),  TRIGGER_WORD("parvis"),
    TRIGGER_WORD("chaussee"),   TRIGGER_WORD("rond-point"), TRIGGER_WORD("villa"),
    TRIGGER_WORD("clos"),       TRIGGER_WORD("domaine"),    TRIGGER_WORD("lieu-dit"),
    {NULL, 0},
};
static const TriggerWord trigger_month_words[] = {
    TRIGGER_WORD("janvier"), TRIGGER_WORD("fevrier"),   TRIGGER_WORD("mars"),
    TRIGGER_WORD("avril"),   TRIGGER_WORD("mai"),       TRIGGER_WORD("juin"),
    TRIGGER_WORD("juillet"), TRIGGER_WORD("aout"),      TRIGGER_WORD("septembre"),
    TRIGGER_WORD("octobre"), TRIGGER_WORD("novembre"),  TRIGGER_WORD("decembre"),
    {NULL, 0},
};
static const TriggerWord trigger_age_unit_words[] = {
    TRIGGER_WORD("an"), TRIGGER_WORD("ans"), TRIGGER_WORD("mois"), {NULL, 0},
};
static TriggerWords trigger_street_types = {trigger_street_type_words, {0}};
static TriggerWords trigger_months = {trigger_month_words, {0}};
static TriggerWords trigger_age_units = {trigger_age_unit_words, {0}};

/* Fills the tables: once, before any scan. */
static void triggers_init(void)
{
    trigger_classes_fill_table();
    trigger_words_fill(&trigger_street_types);
    trigger_words_fill(&trigger_months);
    trigger_words_fill(&trigger_age_units);
}

/* `n` digits from `i`: the position after them, or 0 (no hit starts at 0 and ends there). */
static size_t trigger_digits(const TriggerText *t, size_t i, int n)
{
    for (int k = 0; k < n; k++) {
        if (!trigger_is(t, i + (size_t)k, T_DIGIT)) {
            return 0;
        }
    }
    return i + (size_t)n;
}

/* NIR: \b[1-478][ .-]?\d\d[ .-]?\d\d[ .-]?(?:\d\d|2[ABab])[ .-]?\d\d\d[ .-]?\d\d\d
   (a separator is taken when there: the next part opens with a digit). */
static size_t trigger_nir_end(const TriggerText *t, size_t i)
{
    unsigned char first = t->text[i];
    if (first == '0' || first == '5' || first == '6' || first == '9') {
        return 0;
    }
    static const int parts[5] = {2, 2, 2, 3, 3};
    size_t p = i + 1;
    for (int k = 0; k < 5; k++) {
        if (trigger_is(t, p, T_NIR_SEP)) {
            p++;
        }
        if (k == 2 && trigger_at(t, p) == '2') {
            unsigned char letter = trigger_at(t, p + 1);
            if (letter == 'A' || letter == 'B' || letter == 'a' || letter == 'b') {
                p += 2;
                continue;
            }
        }
        p = trigger_digits(t, p, parts[k]);
        if (p == 0) {
            return 0;
        }
    }
    return p;
}

/* IBAN's trigger, caseless: \b[A-Z][A-Z]\d\d(?: ?[A-Z0-9]{4}){2}, from its first digit
   at `i` (the letters before it). */
static size_t trigger_iban_end(const TriggerText *t, size_t i)
{
    if (i < 2 || !trigger_is(t, i - 1, T_UPPER | T_LOWER) || !trigger_is(t, i - 2, T_UPPER | T_LOWER)
        || (i > 2 && trigger_is(t, i - 3, T_WORD)) || !trigger_is(t, i + 1, T_DIGIT)) {
        return 0;
    }
    size_t p = i + 2;
    for (int group = 0; group < 2; group++) {
        if (trigger_at(t, p) == ' ') {
            p++;
        }
        for (int k = 0; k < 4; k++, p++) {
            if (!trigger_is(t, p, T_ALNUM)) {
                return 0;
            }
        }
    }
    return p;
}

/* DATE_NUMERIC's trigger: \b\d{1,2}[/.-]\d{1,2}[/.-] */
static size_t trigger_date_numeric_end(const TriggerText *t, size_t i)
{
    size_t p = i + 1;
    for (int part = 0; part < 2; part++) {
        if (part == 1) {
            if (!trigger_is(t, p, T_DIGIT)) {
                return 0;
            }
            p++;
        }
        if (trigger_is(t, p, T_DIGIT)) {
            p++;
        }
        if (!trigger_is(t, p, T_DATE_SEP)) {
            return 0;
        }
        p++;
    }
    return p;
}

/* DATE_ISO: \b(?:19|20)\d\d-\d\d-\d\d\b */
static size_t trigger_date_iso_end(const TriggerText *t, size_t i)
{
    unsigned char a = t->text[i], b = trigger_at(t, i + 1);
    if (!((a == '1' && b == '9') || (a == '2' && b == '0'))) {
        return 0;
    }
    size_t p = trigger_digits(t, i + 2, 2);
    for (int part = 0; part < 2 && p != 0; part++) {
        p = trigger_at(t, p) == '-' ? trigger_digits(t, p + 1, 2) : 0;
    }
    return p != 0 && !trigger_is(t, p, T_WORD) ? p : 0;
}

/* DATE_WORDS, caseless: \b\d{1,2}(?:er)? (?:months) (?:19|20)\d\d\b */
static size_t trigger_date_words_end(const TriggerText *t, size_t i)
{
    size_t p = i + 1;
    if (trigger_is(t, p, T_DIGIT)) {
        p++;
    }
    if (trigger_word_at(t, p, "er", 2)) {
        p += 2;
    }
    if (trigger_at(t, p) != ' ') {
        return 0;
    }
    p++;
    size_t month_end = trigger_word_end(t, p, &trigger_months);
    if (month_end == 0 || trigger_at(t, month_end) != ' ') {
        return 0;
    }
    p = month_end + 1;
    unsigned char a = trigger_at(t, p), b = trigger_at(t, p + 1);
    if (!((a == '1' && b == '9') || (a == '2' && b == '0'))) {
        return 0;
    }
    p = trigger_digits(t, p + 2, 2);
    return p != 0 && !trigger_is(t, p, T_WORD) ? p : 0;
}

/* STREET's triggers, caseless, from a digit at `i`: \d,? (?:types)\b and
   \d ?(?:bis|ter),? (?:types)\b. The end, or 0. */
static size_t trigger_street_end(const TriggerText *t, size_t i)
{
    size_t p = i + 1;
    if (trigger_at(t, p) == ' ') {
        p++;
    }
    if (trigger_word_at(t, p, "bis", 3) || trigger_word_at(t, p, "ter", 3)) {
        p += 3;
    } else {
        p = i + 1; /* the first form: no space before its comma */
    }
    if (trigger_at(t, p) == ',') {
        p++;
    }
    if (trigger_at(t, p) != ' ') {
        return 0;
    }
    return trigger_word_end(t, p + 1, &trigger_street_types);
}

/* AGE's triggers, caseless, from a digit at `i`: \d ?ans?\b and \d ?mois\b. The end,
   or 0. */
static size_t trigger_age_end(const TriggerText *t, size_t i)
{
    size_t p = i + 1;
    if (trigger_at(t, p) == ' ') {
        p++;
    }
    return trigger_word_end(t, p, &trigger_age_units);
}

#define TRIGGER_EMIT(kind, start, end)                                                      \
    do {                                                                                    \
        if (sink(context, (unsigned int)ids[kind], (start), (end)) < 0) {                  \
            return -1;                                                                      \
        }                                                                                   \
    } while (0)

/* The hits at the digit at `i`. */
static int triggers_at_digit(const int *ids, const TriggerText *t, size_t i, TriggerSink sink,
                             void *context)
{
    const unsigned char *text = t->text;
    int boundary = i == 0 || !trigger_is(t, i - 1, T_WORD);
    size_t end;
    if (boundary) {
        if (ids[TRIGGER_NIR] >= 0 && (end = trigger_nir_end(t, i)) != 0) {
            TRIGGER_EMIT(TRIGGER_NIR, i, end);
        }
        if (text[i] == '0') {
            unsigned char next = trigger_at(t, i + 1);
            if (ids[TRIGGER_PHONE_FR] >= 0) {
                if (next >= '1' && next <= '9') {
                    TRIGGER_EMIT(TRIGGER_PHONE_FR, i, i + 2);
                } else if (next == '0' && trigger_at(t, i + 2) == '3' && trigger_at(t, i + 3) == '3') {
                    TRIGGER_EMIT(TRIGGER_PHONE_FR, i, i + 4);
                }
            }
            unsigned char third = trigger_at(t, i + 2);
            if (ids[TRIGGER_PHONE_INTL] >= 0 && next == '0' && third >= '1' && third <= '9') {
                TRIGGER_EMIT(TRIGGER_PHONE_INTL, i, i + 3);
            }
        }
        if (ids[TRIGGER_DATE_NUMERIC] >= 0 && (end = trigger_date_numeric_end(t, i)) != 0) {
            TRIGGER_EMIT(TRIGGER_DATE_NUMERIC, i, end);
        }
        if (ids[TRIGGER_DATE_ISO] >= 0 && (end = trigger_date_iso_end(t, i)) != 0) {
            TRIGGER_EMIT(TRIGGER_DATE_ISO, i, end);
        }
        if (ids[TRIGGER_DATE_WORDS] >= 0 && (end = trigger_date_words_end(t, i)) != 0) {
            TRIGGER_EMIT(TRIGGER_DATE_WORDS, i, end);
        }
    }
    if (ids[TRIGGER_IBAN] >= 0 && (end = trigger_iban_end(t, i)) != 0) {
        TRIGGER_EMIT(TRIGGER_IBAN, i - 2, end);
    }
    if (trigger_is(t, i + 1, T_DIGIT)) {
        return 0; /* a street's number and an age end at this digit's successor or later */
    }
    if (ids[TRIGGER_STREET] >= 0 && (end = trigger_street_end(t, i)) != 0) {
        TRIGGER_EMIT(TRIGGER_STREET, i, end);
    }
    if (ids[TRIGGER_AGE] >= 0 && (end = trigger_age_end(t, i)) != 0) {
        TRIGGER_EMIT(TRIGGER_AGE, i, end);
    }
    return 0;
}

/* The words before a name (shapes._CIVILITY, _INTRO and _DOCTOR), case as written. The
   civilities and titles a dot may follow, and those that stand without one. */
static const TriggerWord trigger_civilities_dotted[] = {
    TRIGGER_WORD("M"), TRIGGER_WORD("Mr"), TRIGGER_WORD("Mme"), TRIGGER_WORD("Mlle"), {NULL, 0},
};
static const TriggerWord trigger_civilities[] = {
    TRIGGER_WORD("Mr"),     TRIGGER_WORD("Mme"),      TRIGGER_WORD("Mlle"),
    TRIGGER_WORD("Madame"), TRIGGER_WORD("Monsieur"), TRIGGER_WORD("Mademoiselle"),
    TRIGGER_WORD("MME"),    TRIGGER_WORD("MR"),       TRIGGER_WORD("MLLE"),
    TRIGGER_WORD("MADAME"), TRIGGER_WORD("MONSIEUR"), {NULL, 0},
};
static const TriggerWord trigger_intros[] = {
    TRIGGER_WORD("Patient"), TRIGGER_WORD("patient"), TRIGGER_WORD("Patiente"),
    TRIGGER_WORD("patiente"), TRIGGER_WORD("PATIENT"), TRIGGER_WORD("PATIENTE"),
    TRIGGER_WORD("Pour"),    TRIGGER_WORD("pour"),    TRIGGER_WORD("POUR"),
    TRIGGER_WORD("Bonjour"), TRIGGER_WORD("bonjour"), TRIGGER_WORD("Bonsoir"),
    TRIGGER_WORD("bonsoir"), TRIGGER_WORD("Cher"),    TRIGGER_WORD("cher"),
    TRIGGER_WORD("Chere"),   TRIGGER_WORD("chere"),   TRIGGER_WORD("Nom"),
    TRIGGER_WORD("nom"),     {NULL, 0},
};
static const TriggerWord trigger_doctors[] = {
    TRIGGER_WORD("Dr"), TRIGGER_WORD("DR"), TRIGGER_WORD("Docteur"), TRIGGER_WORD("DOCTEUR"),
    TRIGGER_WORD("Pr"), TRIGGER_WORD("Professeur"), {NULL, 0},
};
#define TRIGGER_LONGEST_TITLE 12 /* "Mademoiselle" */

/* The run of letters ending at `end` when a word boundary opens it (no word character
   before) and it is at most TRIGGER_LONGEST_TITLE long: its start, else `end` (never a
   title's start: no title is empty). */
static size_t trigger_title_run(const TriggerText *t, size_t end)
{
    size_t start = end;
    while (start > 0 && end - start <= TRIGGER_LONGEST_TITLE
           && (trigger_classes[t->text[start - 1]] & (T_UPPER | T_LOWER))) {
        start--;
    }
    if (end - start > TRIGGER_LONGEST_TITLE
        || (start > 0 && (trigger_classes[t->text[start - 1]] & T_WORD))) {
        return end;
    }
    return start;
}

/* Whether text[start:end] is one of `words`, as written. */
static int trigger_is_title(const TriggerText *t, size_t start, size_t end,
                            const TriggerWord *words)
{
    for (size_t k = 0; words[k].text != NULL; k++) {
        if (words[k].length == end - start
            && memcmp(words[k].text, t->text + start, end - start) == 0) {
            return 1;
        }
    }
    return 0;
}

/* The hits of the words before a name, ending at the capital after the space at `i`:
   CIVILITY_NAME's \b(?:civilities) [A-Z], INTRO_NAME's \b(?:intros)(?: ?:)? [A-Z] and
   DOCTOR's \b(?:titles)\.? [A-Z]. Every title opens with one of "BCDMNPbcnp". */
static int triggers_before_name(const int *ids, const TriggerText *t, size_t i, TriggerSink sink,
                                void *context)
{
    unsigned char last = t->text[i - 1];
    /* The title ends at the space, or before the "." or ":" there, or before " :". */
    size_t end = i;
    if (last == '.' || last == ':') {
        end = i - 1;
        if (last == ':' && i >= 2 && t->text[i - 2] == ' ') {
            end = i - 2;
        }
    }
    size_t start = trigger_title_run(t, end);
    if (start == end || strchr("BCDMNPbcnp", t->text[start]) == NULL) {
        return 0;
    }
    if (ids[TRIGGER_CIVILITY_NAME] >= 0 && last != ':'
        && trigger_is_title(t, start, end,
                            last == '.' ? trigger_civilities_dotted : trigger_civilities)) {
        TRIGGER_EMIT(TRIGGER_CIVILITY_NAME, start, i + 2);
    }
    if (ids[TRIGGER_INTRO_NAME] >= 0 && last != '.'
        && trigger_is_title(t, start, end, trigger_intros)) {
        TRIGGER_EMIT(TRIGGER_INTRO_NAME, start, i + 2);
    }
    if (ids[TRIGGER_DOCTOR] >= 0 && last != ':'
        && trigger_is_title(t, start, end, trigger_doctors)) {
        TRIGGER_EMIT(TRIGGER_DOCTOR, start, i + 2);
    }
    return 0;
}

/* The hits around the space at `i`: a postcode and town's, a name pair's junction, the
   words before a name. */
static int triggers_at_space(const int *ids, const TriggerText *t, size_t i, TriggerSink sink,
                             void *context)
{
    if (i == 0 || !trigger_is(t, i + 1, T_UPPER)) {
        return 0;
    }
    /* POSTCODE_TOWN: \d\d\d\d\d [A-Z] */
    if (ids[TRIGGER_POSTCODE_TOWN] >= 0 && i >= 5 && trigger_digits(t, i - 5, 5) != 0) {
        TRIGGER_EMIT(TRIGGER_POSTCODE_TOWN, i - 5, i + 2);
    }
    unsigned char before = t->text[i - 1], second = trigger_at(t, i + 2);
    int apostrophe = second == '\'' && trigger_is(t, i + 3, T_UPPER);
    /* FIRST_UPPER: [a-z] [A-Z][A-Z] and [a-z] [A-Z]'[A-Z] */
    if (ids[TRIGGER_FIRST_UPPER] >= 0 && (trigger_classes[before] & T_LOWER)) {
        if (trigger_classes[second] & T_UPPER) {
            TRIGGER_EMIT(TRIGGER_FIRST_UPPER, i - 1, i + 3);
        } else if (apostrophe) {
            TRIGGER_EMIT(TRIGGER_FIRST_UPPER, i - 1, i + 4);
        }
    }
    /* UPPER_FIRST: [A-Z][A-Z] [A-Z][a-z] and [A-Z][A-Z] [A-Z]'[A-Z] */
    if (ids[TRIGGER_UPPER_FIRST] >= 0 && i >= 2 && (trigger_classes[before] & T_UPPER)
        && trigger_is(t, i - 2, T_UPPER)) {
        if (trigger_classes[second] & T_LOWER) {
            TRIGGER_EMIT(TRIGGER_UPPER_FIRST, i - 2, i + 3);
        } else if (apostrophe) {
            TRIGGER_EMIT(TRIGGER_UPPER_FIRST, i - 2, i + 4);
        }
    }
    return triggers_before_name(ids, t, i, sink, context);
}

/* The hits at the "+" at `i`: PHONE_FR's \+33, PHONE_INTL's \+[1-9]. */
static int triggers_at_plus(const int *ids, const TriggerText *t, size_t i, TriggerSink sink,
                            void *context)
{
    unsigned char next = trigger_at(t, i + 1);
    if (ids[TRIGGER_PHONE_FR] >= 0 && next == '3' && trigger_at(t, i + 2) == '3') {
        TRIGGER_EMIT(TRIGGER_PHONE_FR, i, i + 3);
    }
    if (ids[TRIGGER_PHONE_INTL] >= 0 && next >= '1' && next <= '9') {
        TRIGGER_EMIT(TRIGGER_PHONE_INTL, i, i + 2);
    }
    return 0;
}

/* Where a trigger may be read in text[base:base + count] (count <= 16), bit k for
   base + k: a digit that does not stand between two digits (no hit starts or ends
   there: see triggers_at_digit), a "+", a capital after a space (the space's hits). */
static unsigned int trigger_leads(const TriggerText *t, size_t base, size_t count)
{
    unsigned int mask = 0;
    for (size_t k = 0; k < count; k++) {
        size_t i = base + k;
        unsigned char c = t->text[i];
        int lead = 0;
        if (trigger_classes[c] & T_DIGIT) {
            lead = i == 0 || !trigger_is(t, i - 1, T_DIGIT) || !trigger_is(t, i + 1, T_DIGIT);
        } else if (c == '+') {
            lead = 1;
        } else if (trigger_classes[c] & T_UPPER) {
            lead = i > 0 && t->text[i - 1] == ' ';
        }
        mask |= (unsigned int)lead << k;
    }
    return mask;
}

#if defined(__SSE2__)
#include <emmintrin.h>

static inline __m128i trigger_digits_in(__m128i bytes)
{
    return _mm_and_si128(_mm_cmpgt_epi8(bytes, _mm_set1_epi8('0' - 1)),
                         _mm_cmplt_epi8(bytes, _mm_set1_epi8('9' + 1)));
}

/* trigger_leads for 16 bytes with one byte of text on each side (base >= 1, base + 17
   <= length), 16 at a time: the bytes >= 0x80 compare as negative, below "0" and "A". */
static unsigned int trigger_leads_16(const TriggerText *t, size_t base)
{
    const unsigned char *at = t->text + base;
    __m128i bytes = _mm_loadu_si128((const __m128i *)at);
    __m128i previous = _mm_loadu_si128((const __m128i *)(at - 1));
    __m128i next = _mm_loadu_si128((const __m128i *)(at + 1));
    __m128i digits = trigger_digits_in(bytes);
    __m128i inside_run = _mm_and_si128(trigger_digits_in(previous), trigger_digits_in(next));
    __m128i capitals = _mm_and_si128(_mm_cmpgt_epi8(bytes, _mm_set1_epi8('A' - 1)),
                                     _mm_cmplt_epi8(bytes, _mm_set1_epi8('Z' + 1)));
    __m128i after_space = _mm_cmpeq_epi8(previous, _mm_set1_epi8(' '));
    __m128i leads = _mm_or_si128(_mm_andnot_si128(inside_run, digits),
                                 _mm_or_si128(_mm_cmpeq_epi8(bytes, _mm_set1_epi8('+')),
                                              _mm_and_si128(capitals, after_space)));
    return (unsigned int)_mm_movemask_epi8(leads);
}
#endif

static int find_triggers(const int *ids, const unsigned char *text, size_t length,
                         TriggerSink sink, void *context)
{
    const TriggerText t = {text, length};
    for (size_t base = 0; base < length; base += 16) {
        size_t count = length - base < 16 ? length - base : 16;
        unsigned int leads;
#if defined(__SSE2__)
        if (base >= 1 && base + 17 <= length) {
            leads = trigger_leads_16(&t, base);
        } else {
            leads = trigger_leads(&t, base, count); /* the edges: also checks the above */
        }
#else
        leads = trigger_leads(&t, base, count);
#endif
        while (leads != 0) {
            size_t i = base + (size_t)__builtin_ctz(leads);
            leads &= leads - 1;
            unsigned char c = text[i];
            int result;
            if (trigger_classes[c] & T_DIGIT) {
                result = triggers_at_digit(ids, &t, i, sink, context);
            } else if (c == '+') {
                result = triggers_at_plus(ids, &t, i, sink, context);
            } else {
                result = triggers_at_space(ids, &t, i - 1, sink, context);
            }
            if (result < 0) {
                return -1;
            }
        }
    }
    return 0;
}

#endif
