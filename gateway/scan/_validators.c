/* gateway.scan._validators: the scan core's hot candidate validators, in C.

Purpose. Every date, phone, NIR and IBAN candidate the shapes find is validated by
gateway/scan/validators.py: a birth label looked for before each date, the date read and
checked, a phone's digits normalised, a NIR's key or an IBAN's mod 97 computed. In
compiled Python each costs a few thousand instructions (slices, str methods, the
characters read one str object at a time): ~30k of the ~610k a dense 2 KB lab order costs
(load-tests/callgrind_scan.py). Here each is one loop over the folded text's own bytes,
reading the candidate in place (no slice), that builds only its result: 23,000
instructions fewer per dense order (609.8k to 586.8k), the birth label alone from ~1.9k a
date to ~0.6k, the call included.

Contract (gateway/scan/validators.py dispatches to it and keeps its Python code as the
fallback; tests/scan/test_validators_native.py compares both on arbitrary text, the corpus
and the dense benchmark orders):
- `Validators(birth_words, birth_words_open, window, months)`: the birth labels of
  validators.py (_BIRTH_WORDS, _BIRTH_WORDS_OPEN: tuples of non-empty lower-case ASCII
  str), BIRTH_LABEL_WINDOW (an int, 0 or more) and its month names (a tuple of 12 such
  str, January first). Kept as given: one definition, in Python.
- Each method reads `text[start:end]` (or `text[:end]`) of `text`, the folded text (an
  ASCII str), and answers what validators.py's function of that candidate answers:
  - `is_birth_label_before(text, end)` -> bool;
  - `numeric_date_iso(text, start, end)`, `date_iso(text, start, end)` -> "YYYY-MM-DD" or
    None ("12/03/1984", "12.03.84"; "1984-03-12", "1er mars 1984");
  - `phone_fr_value(text, start, end)` -> the 10-digit national number or None;
  - `nir_key_valid(text, start, end)` -> the compact NIR when its key is valid (15
    characters, Corsica's 2A/2B included), else None (validators.py then looks for a
    label);
  - `iban_value(text, start, end)` -> (compact IBAN, length of the candidate kept) or None.
  "Undecided" answers send the caller back to its Python code: None from
  is_birth_label_before and "" from the others. They are given for a text that is not
  ASCII (never folded text), and by the date readers where the Python takes a rare path
  (a number that is not 1-4 ASCII digits: int()'s rules; words that are no date).
- Wrong argument types or counts raise TypeError; offsets outside 0 <= start <= end <=
  len(text) raise ValueError. No message quotes the text: it is patient data.

Invariants. Holds the GIL (a candidate is tens of characters), keeps no state but the
labels it was built with (immutable tuples of str, referenced), and makes no Python object
but its result. Every offset is checked against the text's length before any read, and
every read stays within [0, end) or [start, end). The labels are checked ASCII when built.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define NIR_LENGTH 15
#define IBAN_MIN_LENGTH 15
#define PHONE_DIGITS_MAX 64 /* phone digits: more are no national number */

typedef struct {
    PyObject_HEAD
    PyObject *birth_words;      /* tuple of ASCII str */
    PyObject *birth_words_open; /* tuple of ASCII str */
    Py_ssize_t window;
    unsigned char word_label_last[128]; /* 1 for each word label's last character */
    PyObject *months;                   /* tuple of 12 ASCII str: January first */
} Validators;

static int is_letter(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_word(unsigned char c) /* re.ASCII's \w */
{
    return is_letter(c) || is_digit(c) || c == '_';
}

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

static unsigned char upper(unsigned char c)
{
    return (c >= 'a' && c <= 'z') ? (unsigned char)(c & ~0x20) : c;
}

/* What may stand between a birth label and "le" or the date (validators._BIRTH_TAIL). */
static int is_birth_tail(unsigned char c)
{
    return c == ' ' || c == ':' || c == '.' || c == ',' || c == '-';
}

/* Python's str.isspace() over ASCII: what str.strip() strips. */
static int is_space(unsigned char c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
}

/* ---- arguments ---- */

/* Checks (text, start, end) of `function`: 1 with the text's bytes and the span set, 0
   with an exception, or -1 when the text is not ASCII (the caller answers "undecided"). */
static int parse_span(const char *function, PyObject *const *args, Py_ssize_t nargs,
                      const unsigned char **text, Py_ssize_t *start, Py_ssize_t *end)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "%s() takes 3 arguments, %zd given", function, nargs);
        return 0;
    }
    if (!PyUnicode_Check(args[0]) || !PyLong_Check(args[1]) || !PyLong_Check(args[2])) {
        PyErr_Format(PyExc_TypeError, "%s(): arguments must be (str, int, int)", function);
        return 0;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(args[0]) < 0) {
        return 0;
    }
#endif
    *start = PyLong_AsSsize_t(args[1]);
    if (*start != -1 || !PyErr_Occurred()) {
        *end = PyLong_AsSsize_t(args[2]);
    }
    if (PyErr_Occurred()) { /* OverflowError: reported as a bad offset */
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s(): offset out of range", function);
        return 0;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(args[0]);
    if (*start < 0 || *start > *end || *end > length) {
        PyErr_Format(PyExc_ValueError, "%s(): offsets must be 0 <= start <= end <= len(text)",
                     function);
        return 0;
    }
    if (!PyUnicode_IS_ASCII(args[0])) {
        return -1;
    }
    *text = PyUnicode_1BYTE_DATA(args[0]);
    return 1;
}

static PyObject *undecided(void)
{
    return PyUnicode_New(0, 127); /* "" (the interpreter's shared empty str) */
}

/* ---- birth labels ---- */

/* Whether `label` (ASCII, lower case) stands at text[start:tail], compared lower-cased. */
static int label_equals(const unsigned char *text, Py_ssize_t start, PyObject *label)
{
    const unsigned char *chars = PyUnicode_1BYTE_DATA(label);
    Py_ssize_t length = PyUnicode_GET_LENGTH(label);
    for (Py_ssize_t i = 0; i < length; i++) {
        if (lower(text[start + i]) != chars[i]) {
            return 0;
        }
    }
    return 1;
}

/* Whether one of `labels` ends at `tail`, starting at `low` or later, at a word boundary
   (the window's start counts as one). */
static int any_label_ends(const unsigned char *text, Py_ssize_t low, Py_ssize_t tail,
                          PyObject *labels, const unsigned char *word, Py_ssize_t word_length)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(labels); i++) {
        PyObject *label = PyTuple_GET_ITEM(labels, i);
        const unsigned char *chars = PyUnicode_1BYTE_DATA(label);
        Py_ssize_t length = PyUnicode_GET_LENGTH(label);
        if (word != NULL) { /* a word label: its last word must be `word` */
            Py_ssize_t last = length;
            while (last > 0 && chars[last - 1] != ' ') {
                last--;
            }
            if (length - last != word_length) {
                continue;
            }
            int same = 1;
            for (Py_ssize_t k = 0; k < word_length; k++) {
                same &= lower(word[k]) == chars[last + k];
            }
            if (!same) {
                continue;
            }
        }
        Py_ssize_t start = tail - length;
        if (start >= low && (start == low || !is_word(text[start - 1]))
            && label_equals(text, start, label)) {
            return 1;
        }
    }
    return 0;
}

/* validators._birth_label_ends: whether a label, then 0-4 of " :.,-", ends at `position`,
   not starting before `low`; `before_le`: "le" follows. low <= position <= len(text). */
static int birth_label_ends(const Validators *self, const unsigned char *text, Py_ssize_t low,
                            Py_ssize_t position, int before_le)
{
    Py_ssize_t tail = position;
    while (tail > low && is_birth_tail(text[tail - 1])) {
        tail--;
    }
    if (position - tail > 4 || tail == low) {
        return 0;
    }
    unsigned char last = lower(text[tail - 1]);
    if (last != ')' && !self->word_label_last[last]) {
        return 0; /* most dates: no label ends with this character */
    }
    if (last == ')') {
        return any_label_ends(text, low, tail, self->birth_words_open, NULL, 0);
    }
    if (before_le && tail == position) {
        return 0; /* "nele": no word boundary after the label */
    }
    Py_ssize_t word_start = tail - 1;
    while (word_start > low && is_letter(text[word_start - 1])) {
        word_start--;
    }
    return any_label_ends(text, low, tail, self->birth_words, text + word_start,
                          tail - word_start);
}

static PyObject *Validators_is_birth_label_before(Validators *self, PyObject *const *args,
                                                  Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "is_birth_label_before() takes 2 arguments, %zd given",
                     nargs);
        return NULL;
    }
    if (!PyUnicode_Check(args[0]) || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "is_birth_label_before(): arguments must be (str, int)");
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(args[0]) < 0) {
        return NULL;
    }
#endif
    Py_ssize_t end = PyLong_AsSsize_t(args[1]);
    if (end == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        end = -1;
    }
    if (end < 0 || end > PyUnicode_GET_LENGTH(args[0])) {
        PyErr_SetString(PyExc_ValueError,
                        "is_birth_label_before(): end must be 0 <= end <= len(text)");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(args[0])) {
        Py_RETURN_NONE; /* undecided */
    }
    const unsigned char *text = PyUnicode_1BYTE_DATA(args[0]);
    Py_ssize_t low = end > self->window ? end - self->window : 0;
    Py_ssize_t position = end; /* validators.space_colon_run_start */
    while (position > low && (text[position - 1] == ' ' || text[position - 1] == ':')) {
        position--;
    }
    if (end - position >= 1 && end - position <= 3 && position - 2 >= low
        && lower(text[position - 2]) == 'l' && lower(text[position - 1]) == 'e'
        && birth_label_ends(self, text, low, position - 2, 1)) {
        Py_RETURN_TRUE;
    }
    return PyBool_FromLong(birth_label_ends(self, text, low, end, 0));
}

/* ---- dates ---- */

/* validators._short_number: the value of 1-4 ASCII digits, else -1. */
static long short_number(const unsigned char *text, Py_ssize_t start, Py_ssize_t end)
{
    if (end - start < 1 || end - start > 4) {
        return -1;
    }
    long value = 0;
    for (Py_ssize_t i = start; i < end; i++) {
        if (!is_digit(text[i])) {
            return -1;
        }
        value = value * 10 + (text[i] - '0');
    }
    return value;
}

/* validators.iso_date: "YYYY-MM-DD", or None when `date` would refuse it. */
static PyObject *iso_date(long year, long month, long day)
{
    if (year < 1 || year > 9999 || month < 1 || month > 12 || day < 1 || day > 31) {
        Py_RETURN_NONE;
    }
    if (month == 2) {
        int leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        if (day > (leap ? 29 : 28)) {
            Py_RETURN_NONE;
        }
    } else if (day > 30 && (month == 4 || month == 6 || month == 9 || month == 11)) {
        Py_RETURN_NONE;
    }
    PyObject *result = PyUnicode_New(10, 127);
    if (result == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(result);
    out[0] = (Py_UCS1)('0' + year / 1000);
    out[1] = (Py_UCS1)('0' + year / 100 % 10);
    out[2] = (Py_UCS1)('0' + year / 10 % 10);
    out[3] = (Py_UCS1)('0' + year % 10);
    out[4] = '-';
    out[5] = (Py_UCS1)('0' + month / 10);
    out[6] = (Py_UCS1)('0' + month % 10);
    out[7] = '-';
    out[8] = (Py_UCS1)('0' + day / 10);
    out[9] = (Py_UCS1)('0' + day % 10);
    return result;
}

static PyObject *read_numeric_date_iso(const Validators *self, const unsigned char *text,
                                       Py_ssize_t start, Py_ssize_t end)
{
    /* Its parts, split on each "/", "." and "-": bounds[i] to bounds[i + 1] - 1. */
    Py_ssize_t bounds[4] = {start, 0, 0, end + 1};
    int separators = 0;
    for (Py_ssize_t i = start; i < end; i++) {
        if (text[i] == '/' || text[i] == '.' || text[i] == '-') {
            if (++separators > 2) {
                Py_RETURN_NONE; /* more than three parts */
            }
            bounds[separators] = i + 1;
        }
    }
    if (separators != 2) {
        Py_RETURN_NONE;
    }
    long day = short_number(text, bounds[0], bounds[1] - 1);
    long month = short_number(text, bounds[1], bounds[2] - 1);
    long year = short_number(text, bounds[2], end);
    if (day < 0 || month < 0 || year < 0) {
        return undecided(); /* int()'s rules: the Python reads it */
    }
    if (end - bounds[2] == 2) {
        year += year <= 30 ? 2000 : 1900;
    }
    return iso_date(year, month, day);
}

/* validators.parse_date's reading of "12 mars 1984" and "1er MAI 84"... in ISO form: three
   words (split on white space), a month's name second, 1-4 ASCII digits around it (the
   first maybe followed by "er"). Anything else is left to the Python: undecided. */
static PyObject *month_words_date(const Validators *self, const unsigned char *text,
                                  Py_ssize_t start, Py_ssize_t end)
{
    Py_ssize_t length = end - start;
    if (length >= 5 && short_number(text, start, start + 4) >= 0 && text[start + 4] == '-') {
        return undecided(); /* parse_date's "yyyy-..." reading, int()'s rules */
    }
    Py_ssize_t bounds[3][2]; /* the words' [start, end) */
    int words = 0;
    for (Py_ssize_t i = start; i < end;) {
        while (i < end && is_space(text[i])) {
            i++;
        }
        if (i == end) {
            break;
        }
        if (words == 3) {
            return undecided(); /* more than three words */
        }
        bounds[words][0] = i;
        while (i < end && !is_space(text[i])) {
            i++;
        }
        bounds[words++][1] = i;
    }
    if (words != 3) {
        return undecided();
    }
    long month = 0;
    Py_ssize_t word_length = bounds[1][1] - bounds[1][0];
    for (Py_ssize_t m = 0; m < PyTuple_GET_SIZE(self->months) && month == 0; m++) {
        PyObject *name = PyTuple_GET_ITEM(self->months, m);
        if (PyUnicode_GET_LENGTH(name) == word_length
            && label_equals(text, bounds[1][0], name)) {
            month = (long)m + 1;
        }
    }
    Py_ssize_t day_end = bounds[0][1];
    if (day_end - bounds[0][0] >= 2 && lower(text[day_end - 2]) == 'e'
        && lower(text[day_end - 1]) == 'r') {
        day_end -= 2; /* "1er" */
    }
    long day = short_number(text, bounds[0][0], day_end);
    long year = short_number(text, bounds[2][0], bounds[2][1]);
    if (month == 0 || day < 0 || year < 0) {
        return undecided(); /* parse_numeric_date, int()'s rules */
    }
    return iso_date(year, month, day);
}

static PyObject *read_date_iso(const Validators *self, const unsigned char *text,
                               Py_ssize_t start, Py_ssize_t end)
{
    if (end - start == 10 && text[start + 4] == '-' && text[start + 7] == '-') {
        long year = short_number(text, start, start + 4);
        long month = short_number(text, start + 5, start + 7);
        long day = short_number(text, start + 8, start + 10);
        if (year >= 0 && month >= 0 && day >= 0) {
            return iso_date(year, month, day);
        }
    }
    return month_words_date(self, text, start, end);
}

/* ---- phone numbers ---- */

static PyObject *read_phone_fr_value(const Validators *self, const unsigned char *text,
                                     Py_ssize_t start, Py_ssize_t end)
{
    /* patients.normalise_phone: the digits; "+" first when the stripped text starts with
       it, else a leading "00" read as "+"; "+33", then maybe one "0", read as "0". */
    Py_ssize_t first = start;
    while (first < end && is_space(text[first])) {
        first++;
    }
    int plus = first < end && text[first] == '+';
    char digits[PHONE_DIGITS_MAX];
    Py_ssize_t count = 0;
    for (Py_ssize_t i = start; i < end; i++) {
        if (is_digit(text[i])) {
            if (count == PHONE_DIGITS_MAX) {
                Py_RETURN_NONE; /* longer than any national number */
            }
            digits[count++] = (char)text[i];
        }
    }
    Py_ssize_t from = 0; /* the national number: "0" (when `zero`), then digits[from:] */
    int zero = 0;
    if (!plus && count >= 2 && digits[0] == '0' && digits[1] == '0') {
        plus = 1;
        from = 2;
    }
    if (plus) {
        if (count - from < 2 || digits[from] != '3' || digits[from + 1] != '3') {
            Py_RETURN_NONE; /* "+...": not national */
        }
        from += 2;
        if (from < count && digits[from] == '0') {
            from++;
        }
        zero = 1;
    }
    Py_ssize_t length = zero + count - from;
    const char *rest = digits + from;
    char first_digit = zero ? '0' : (length > 0 ? rest[0] : 0);
    char second_digit = zero ? (length > 1 ? rest[0] : 0) : (length > 1 ? rest[1] : 0);
    if (length != 10 || first_digit != '0' || second_digit == '0') {
        Py_RETURN_NONE;
    }
    PyObject *result = PyUnicode_New(10, 127);
    if (result == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(result);
    if (zero) {
        out[0] = '0';
    }
    memcpy(out + zero, rest, (size_t)(count - from));
    return result;
}

/* ---- NIR ---- */

static PyObject *read_nir_key_valid(const Validators *self, const unsigned char *text,
                                    Py_ssize_t start, Py_ssize_t end)
{
    /* validators.nir_value's compact form: upper case, without " ", "." and "-". */
    unsigned char compact[NIR_LENGTH];
    Py_ssize_t count = 0;
    for (Py_ssize_t i = start; i < end; i++) {
        unsigned char c = text[i];
        if (c == ' ' || c == '.' || c == '-') {
            continue;
        }
        if (count == NIR_LENGTH) {
            Py_RETURN_NONE;
        }
        compact[count++] = upper(c);
    }
    if (count != NIR_LENGTH) {
        Py_RETURN_NONE;
    }
    /* stdnum's key: 97 minus the first 13 characters mod 97, "2A" read 19, "2B" 18. */
    uint64_t body = 0;
    for (int i = 0; i < 13; i++) {
        unsigned char c = compact[i];
        unsigned digit;
        if (is_digit(c)) {
            digit = c - '0';
        } else if (i == 6 && compact[5] == '2' && (c == 'A' || c == 'B')) {
            digit = c == 'A' ? 9 : 8; /* "2A" 19, "2B" 18 */
            body = body / 10 * 10 + 1; /* the "2" read as "1" */
        } else {
            Py_RETURN_NONE;
        }
        body = body * 10 + digit;
    }
    if (!is_digit(compact[13]) || !is_digit(compact[14])) {
        Py_RETURN_NONE;
    }
    unsigned key = 97 - (unsigned)(body % 97);
    if ((unsigned)(compact[13] - '0') * 10 + (unsigned)(compact[14] - '0') != key) {
        Py_RETURN_NONE;
    }
    PyObject *result = PyUnicode_New(NIR_LENGTH, 127);
    if (result == NULL) {
        return NULL;
    }
    memcpy(PyUnicode_1BYTE_DATA(result), compact, NIR_LENGTH);
    return result;
}

/* ---- IBAN ---- */

/* One character of validators.iban_checksum_valid's remainder, with Python's floor
   modulo (it reads any character: a code below "0" makes a negative step). */
static long iban_step(long remainder, unsigned char c)
{
    if (c >= 65) { /* A-Z: 10-35, two digits */
        return (remainder * 100 + c - 55) % 97;
    }
    return ((remainder * 10 + c - 48) % 97 + 97) % 97;
}

/* validators.iban_checksum_valid of text[start:stop]'s compact form (without spaces,
   upper-cased, 4 characters or more), read in place: from its fifth character, then its
   first four. */
static int iban_checksum_valid(const unsigned char *text, Py_ssize_t start, Py_ssize_t stop)
{
    unsigned char head[4];
    int seen = 0;
    long remainder = 0;
    for (Py_ssize_t i = start; i < stop; i++) {
        if (text[i] == ' ') {
            continue;
        }
        if (seen < 4) {
            head[seen++] = upper(text[i]);
        } else {
            remainder = iban_step(remainder, upper(text[i]));
        }
    }
    for (int k = 0; k < seen; k++) {
        remainder = iban_step(remainder, head[k]);
    }
    return remainder == 1;
}

static PyObject *read_iban_value(const Validators *self, const unsigned char *text,
                                 Py_ssize_t start, Py_ssize_t end)
{
    /* The candidate, then its prefixes cut at a space, group by group. */
    Py_ssize_t kept = end - start;
    while (1) {
        Py_ssize_t count = 0;
        unsigned char third = 0, fourth = 0;
        for (Py_ssize_t i = start; i < start + kept; i++) {
            if (text[i] != ' ') {
                count++;
                if (count == 3) {
                    third = text[i];
                } else if (count == 4) {
                    fourth = text[i];
                }
            }
        }
        if (count < IBAN_MIN_LENGTH) {
            Py_RETURN_NONE;
        }
        if (is_digit(third) && is_digit(fourth) && iban_checksum_valid(text, start, start + kept)) {
            PyObject *value = PyUnicode_New(count, 127);
            if (value == NULL) {
                return NULL;
            }
            Py_UCS1 *out = PyUnicode_1BYTE_DATA(value);
            Py_ssize_t written = 0;
            for (Py_ssize_t i = start; i < start + kept; i++) {
                if (text[i] != ' ') {
                    out[written++] = upper(text[i]);
                }
            }
            PyObject *length = PyLong_FromSsize_t(kept);
            PyObject *pair = length == NULL ? NULL : PyTuple_New(2);
            if (pair == NULL) {
                Py_DECREF(value);
                Py_XDECREF(length);
                return NULL;
            }
            PyTuple_SET_ITEM(pair, 0, value);
            PyTuple_SET_ITEM(pair, 1, length);
            return pair;
        }
        Py_ssize_t cut = kept - 1;
        while (cut >= 0 && text[start + cut] != ' ') {
            cut--;
        }
        if (cut <= 4) {
            Py_RETURN_NONE;
        }
        kept = cut;
    }
}

/* ---- the methods ---- */

/* A reader of text[start:end], an ASCII text's candidate (the offsets checked). */
typedef PyObject *(*SpanReader)(const Validators *self, const unsigned char *text,
                                Py_ssize_t start, Py_ssize_t end);

/* `function(text, start, end)`: the arguments checked, then `reader`'s answer, or ""
   (undecided) for a text that is not ASCII. */
static PyObject *read_span(const Validators *self, const char *function, SpanReader reader,
                           PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *text;
    Py_ssize_t start, end;
    int parsed = parse_span(function, args, nargs, &text, &start, &end);
    if (parsed <= 0) {
        return parsed < 0 ? undecided() : NULL;
    }
    return reader(self, text, start, end);
}

#define SPAN_METHOD(name)                                                                   \
    static PyObject *Validators_##name(Validators *self, PyObject *const *args,             \
                                       Py_ssize_t nargs)                                    \
    {                                                                                       \
        return read_span(self, #name, read_##name, args, nargs);                            \
    }

SPAN_METHOD(numeric_date_iso)
SPAN_METHOD(date_iso)
SPAN_METHOD(phone_fr_value)
SPAN_METHOD(nir_key_valid)
SPAN_METHOD(iban_value)

/* ---- the type ---- */

/* 1 when `labels` is a tuple of non-empty ASCII str, else 0 with TypeError or ValueError. */
static int check_labels(PyObject *labels)
{
    if (!PyTuple_Check(labels)) {
        PyErr_SetString(PyExc_TypeError, "Validators(): labels and months must be tuples of str");
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(labels); i++) {
        PyObject *label = PyTuple_GET_ITEM(labels, i);
        if (!PyUnicode_Check(label)) {
            PyErr_SetString(PyExc_TypeError,
                            "Validators(): labels and months must be tuples of str");
            return 0;
        }
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(label) < 0) {
            return 0;
        }
#endif
        int lower_ascii = PyUnicode_IS_ASCII(label) && PyUnicode_GET_LENGTH(label) > 0;
        for (Py_ssize_t k = 0; lower_ascii && k < PyUnicode_GET_LENGTH(label); k++) {
            Py_UCS1 c = PyUnicode_1BYTE_DATA(label)[k];
            lower_ascii = !(c >= 'A' && c <= 'Z');
        }
        if (!lower_ascii) {
            PyErr_SetString(PyExc_ValueError,
                            "Validators(): labels and months must be non-empty lower-case ASCII");
            return 0;
        }
    }
    return 1;
}

static PyObject *Validators_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *words, *open, *months;
    Py_ssize_t window;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "Validators() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOnO:Validators", &words, &open, &window, &months)) {
        return NULL;
    }
    if (!check_labels(words) || !check_labels(open) || !check_labels(months)) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(months) != 12) {
        PyErr_SetString(PyExc_ValueError, "Validators(): months must be 12");
        return NULL;
    }
    if (window < 0) {
        PyErr_SetString(PyExc_ValueError, "Validators(): window must be 0 or more");
        return NULL;
    }
    Validators *self = (Validators *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->birth_words = Py_NewRef(words);
    self->birth_words_open = Py_NewRef(open);
    self->window = window;
    self->months = Py_NewRef(months);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(words); i++) {
        PyObject *label = PyTuple_GET_ITEM(words, i);
        self->word_label_last[PyUnicode_1BYTE_DATA(label)[PyUnicode_GET_LENGTH(label) - 1]] = 1;
    }
    return (PyObject *)self;
}

static void Validators_dealloc(Validators *self)
{
    Py_XDECREF(self->birth_words);
    Py_XDECREF(self->birth_words_open);
    Py_XDECREF(self->months);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define FASTCALL(function) (PyCFunction)(void (*)(void))(function), METH_FASTCALL

static PyMethodDef Validators_methods[] = {
    {"is_birth_label_before", FASTCALL(Validators_is_birth_label_before),
     "is_birth_label_before(text, end) -> whether a birth label ends text[:end]"},
    {"numeric_date_iso", FASTCALL(Validators_numeric_date_iso),
     "numeric_date_iso(text, start, end) -> ISO date, None, or '' (undecided)"},
    {"date_iso", FASTCALL(Validators_date_iso),
     "date_iso(text, start, end) -> ISO date, None, or '' (undecided)"},
    {"phone_fr_value", FASTCALL(Validators_phone_fr_value),
     "phone_fr_value(text, start, end) -> national number, None, or '' (undecided)"},
    {"nir_key_valid", FASTCALL(Validators_nir_key_valid),
     "nir_key_valid(text, start, end) -> key-valid compact NIR, None, or '' (undecided)"},
    {"iban_value", FASTCALL(Validators_iban_value),
     "iban_value(text, start, end) -> (IBAN, length kept), None, or '' (undecided)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ValidatorsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.scan._validators.Validators",
    .tp_doc = "The birth labels, and the candidate validators of gateway/scan/validators.py.",
    .tp_basicsize = sizeof(Validators),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Validators_new,
    .tp_dealloc = (destructor)Validators_dealloc,
    .tp_methods = Validators_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.scan._validators",
    .m_doc = "The scan core's hot candidate validators, in C.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__validators(void)
{
    if (PyType_Ready(&ValidatorsType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Validators", (PyObject *)&ValidatorsType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
