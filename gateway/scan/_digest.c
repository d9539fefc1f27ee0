/* gateway.scan._digest: the scan engine's finding digests, HMAC-SHA256 in one C call.

Purpose. Every finding carries a keyed digest of its value (crypto.pseudonym.value_digest:
HMAC-SHA256 under the digest key, the first DIGEST_HEX hex characters), about twelve per
dense order. In Python, from hashlib states that have absorbed the key's pads, each digest
is six calls into hashlib (two state copies, each a fresh OpenSSL EVP context; two updates,
two digests) and a slice and a hex: about a tenth of a dense order's instructions. This
module keeps the two keyed SHA-256 states as plain structs and computes the digest in one
call: two struct copies on the stack, two SHA-256 compressions, the hex string.

Contract (gateway/scan/engine.py relies on it; tests/scan/test_digest_native.py checks it
against crypto.pseudonym):
- `Digester(key)` keys the HMAC (RFC 2104): `key` is bytes of any length; one longer than
  SHA-256's 64-byte block is hashed first; the block, zero-padded, xor 0x36 and 0x5c,
  gives the inner and the outer state.
- `Digester.hex(kind, value, hex_chars)` returns the first `hex_chars` (0 to 64) lowercase
  hex characters of HMAC-SHA256(key, UTF-8 of kind + "\n" + value): byte for byte
  `crypto.pseudonym.value_digest(key, kind, value)` when hex_chars is DIGEST_HEX.
- Bad arguments raise TypeError (not bytes, not str, not int, wrong count) or ValueError
  (hex_chars out of range; a str with no UTF-8 form, i.e. a lone surrogate, which the
  Python code rejects too, with UnicodeEncodeError, a ValueError). No message, and no
  exception's attributes, holds an input value: values are patient data.

Invariants. A Digester never changes once made (it is keyed in tp_new, and has no
__init__ to key it again): `hex` copies the two states onto its own stack, so one Digester
serves every thread with no lock. The keyed states are key material: the stack copies of
the key block are wiped, and so are the states when the Digester is freed. `hex` holds the
GIL (values are identifiers, tens of bytes) and makes no Python object but its result.
It uses SHA256_Init/Update/Final, OpenSSL 1.1.1's API, which OpenSSL 3 keeps but deprecates
for EVP: an EVP context copy allocates, a SHA256_CTX is a plain struct (no pointers), so a
struct assignment copies it. libcrypto is the library Python's own hashlib links.
*/
#define PY_SSIZE_T_CLEAN
/* The 1.1.1 API level: SHA256_CTX and its functions, without 3.0's deprecation warnings. */
#define OPENSSL_API_COMPAT 0x10101000L
#include <Python.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>

#define BLOCK_BYTES SHA256_CBLOCK /* 64 */
#define HEX_MAX (2 * SHA256_DIGEST_LENGTH) /* 64 */

typedef struct {
    PyObject_HEAD
    SHA256_CTX inner; /* has absorbed the key block xor 0x36 */
    SHA256_CTX outer; /* has absorbed the key block xor 0x5c */
} Digester;

/* `state` after absorbing `block` xor `pad` (one compression). 1 on success. */
static int absorb_pad(SHA256_CTX *state, const unsigned char *block, unsigned char pad)
{
    unsigned char padded[BLOCK_BYTES];
    for (size_t i = 0; i < BLOCK_BYTES; i++) {
        padded[i] = block[i] ^ pad;
    }
    int ok = SHA256_Init(state) && SHA256_Update(state, padded, BLOCK_BYTES);
    OPENSSL_cleanse(padded, sizeof padded);
    return ok;
}

static PyObject *Digester_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"key", NULL};
    PyObject *key;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!:Digester", keywords, &PyBytes_Type,
                                     &key)) {
        return NULL;
    }
    const unsigned char *bytes = (const unsigned char *)PyBytes_AS_STRING(key);
    size_t length = (size_t)PyBytes_GET_SIZE(key);
    unsigned char block[BLOCK_BYTES] = {0};
    if (length > BLOCK_BYTES) {
        SHA256(bytes, length, block); /* 32 bytes, the rest stays zero */
    } else {
        memcpy(block, bytes, length);
    }
    Digester *self = (Digester *)type->tp_alloc(type, 0);
    if (self != NULL
        && !(absorb_pad(&self->inner, block, 0x36) && absorb_pad(&self->outer, block, 0x5c))) {
        Py_DECREF(self);
        self = NULL;
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL SHA-256 failed");
    }
    OPENSSL_cleanse(block, sizeof block);
    return (PyObject *)self;
}

static void Digester_dealloc(Digester *self)
{
    OPENSSL_cleanse(&self->inner, sizeof self->inner);
    OPENSSL_cleanse(&self->outer, sizeof self->outer);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The UTF-8 of a str argument (borrowed: the str's own, or its cached copy). On a lone
   surrogate, a ValueError that names no value instead of the UnicodeEncodeError (whose
   `object` attribute is the whole string). */
static const char *utf8_of(PyObject *text, Py_ssize_t *length)
{
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, length);
    if (utf8 == NULL && PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError,
                        "Digester.hex(): kind and value must have a UTF-8 form "
                        "(no lone surrogates)");
    }
    return utf8;
}

static PyObject *Digester_hex(Digester *self, PyObject *const *args, Py_ssize_t nargs)
{
    static const char digits[] = "0123456789abcdef";
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError,
                     "Digester.hex() takes 3 arguments (kind, value, hex_chars), %zd given",
                     nargs);
        return NULL;
    }
    if (!PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "Digester.hex(): kind and value must be str");
        return NULL;
    }
    if (!PyLong_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "Digester.hex(): hex_chars must be an int");
        return NULL;
    }
    Py_ssize_t hex_chars = PyLong_AsSsize_t(args[2]);
    if (hex_chars < 0 || hex_chars > HEX_MAX) {
        PyErr_Clear(); /* an overflow is out of range too */
        PyErr_Format(PyExc_ValueError, "Digester.hex(): hex_chars must be from 0 to %d",
                     HEX_MAX);
        return NULL;
    }
    Py_ssize_t kind_length = 0, value_length = 0;
    const char *kind = utf8_of(args[0], &kind_length);
    const char *value = kind == NULL ? NULL : utf8_of(args[1], &value_length);
    if (value == NULL) {
        return NULL;
    }

    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256_CTX state = self->inner;
    int ok = SHA256_Update(&state, kind, (size_t)kind_length)
             && SHA256_Update(&state, "\n", 1)
             && SHA256_Update(&state, value, (size_t)value_length)
             && SHA256_Final(digest, &state);
    state = self->outer;
    ok = ok && SHA256_Update(&state, digest, sizeof digest) && SHA256_Final(digest, &state);
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL SHA-256 failed");
        return NULL;
    }

    PyObject *result = PyUnicode_New(hex_chars, 127);
    if (result == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(result);
    for (Py_ssize_t i = 0; i < hex_chars; i++) {
        unsigned char byte = digest[i / 2];
        out[i] = (Py_UCS1)digits[i % 2 ? byte & 15 : byte >> 4];
    }
    return result;
}

static PyMethodDef Digester_methods[] = {
    {"hex", (PyCFunction)(void (*)(void))Digester_hex, METH_FASTCALL,
     "hex(kind, value, hex_chars) -> the first hex_chars hex characters of\n"
     "HMAC-SHA256(key, UTF-8 of kind + '\\n' + value)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DigesterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.scan._digest.Digester",
    .tp_doc = "Digester(key): HMAC-SHA256 under key, from its precomputed inner and outer "
              "states.",
    .tp_basicsize = sizeof(Digester),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Digester_new,
    .tp_dealloc = (destructor)Digester_dealloc,
    .tp_methods = Digester_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.scan._digest",
    .m_doc = "The scan engine's finding digests: HMAC-SHA256 in one C call.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__digest(void)
{
    if (PyType_Ready(&DigesterType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Digester", (PyObject *)&DigesterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
