/* Optional accelerator for the protocol hot path (spec 3.3, 3.4).
 *
 * Each function mirrors its pure-Python reference in fcgi_async.protocol.records exactly,
 * error messages included; the Python functions stay the reference and the same tests run
 * against both.
 * decode_pairs(data: bytes, max_pairs: int, error: type) -> list[tuple[bytes, bytes]]
 *     mirrors _decode_pairs_py.
 * parse_request_head(buf, max_params_bytes: int, max_pairs: int) -> tuple | None
 *     mirrors _parse_request_head_py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static int
read_length(const unsigned char *buf, Py_ssize_t *pos, Py_ssize_t end, Py_ssize_t *out,
            PyObject *error)
{
    unsigned char b = buf[*pos];
    if (b < 0x80) {
        *out = b;
        *pos += 1;
        return 0;
    }
    if (*pos + 4 > end) {
        PyErr_SetString(error, "name-value pair truncated in a 4-byte length");
        return -1;
    }
    *out = ((Py_ssize_t)(b & 0x7F) << 24) | ((Py_ssize_t)buf[*pos + 1] << 16) |
           ((Py_ssize_t)buf[*pos + 2] << 8) | (Py_ssize_t)buf[*pos + 3];
    *pos += 4;
    return 0;
}

static PyObject *
decode_pairs(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t max_pairs;
    PyObject *error;
    if (!PyArg_ParseTuple(args, "y*nO", &view, &max_pairs, &error))
        return NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    Py_ssize_t end = view.len, pos = 0, count = 0;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        goto fail;
    while (pos < end) {
        Py_ssize_t nlen, vlen;
        if (count >= max_pairs) {
            PyErr_Format(error, "more than %zd name-value pairs", max_pairs);
            goto fail;
        }
        if (read_length(buf, &pos, end, &nlen, error) < 0)
            goto fail;
        if (pos >= end) {
            PyErr_SetString(error, "name-value pair truncated in its lengths");
            goto fail;
        }
        if (read_length(buf, &pos, end, &vlen, error) < 0)
            goto fail;
        if (nlen > end - pos || vlen > end - pos - nlen) {
            PyErr_SetString(error, "name-value pair longer than the stream that holds it");
            goto fail;
        }
        PyObject *name = PyBytes_FromStringAndSize((const char *)buf + pos, nlen);
        PyObject *value = name ? PyBytes_FromStringAndSize((const char *)buf + pos + nlen, vlen)
                               : NULL;
        PyObject *pair = value ? PyTuple_Pack(2, name, value) : NULL;
        Py_XDECREF(name);
        Py_XDECREF(value);
        if (pair == NULL)
            goto fail;
        if (PyList_Append(out, pair) < 0) {
            Py_DECREF(pair);
            goto fail;
        }
        Py_DECREF(pair);
        pos += nlen + vlen;
        count++;
    }
    PyBuffer_Release(&view);
    return out;
fail:
    Py_XDECREF(out);
    PyBuffer_Release(&view);
    return NULL;
}

/* A pair length at buf[*pos] (1 or 4 bytes); -1 when it runs past end. */
static int
head_length(const unsigned char *buf, Py_ssize_t *pos, Py_ssize_t end, Py_ssize_t *out)
{
    if (*pos >= end)
        return -1;
    unsigned char b = buf[*pos];
    if (b < 0x80) {
        *out = b;
        *pos += 1;
        return 0;
    }
    if (*pos + 4 > end)
        return -1;
    *out = ((Py_ssize_t)(b & 0x7F) << 24) | ((Py_ssize_t)buf[*pos + 1] << 16) |
           ((Py_ssize_t)buf[*pos + 2] << 8) | (Py_ssize_t)buf[*pos + 3];
    *pos += 4;
    return 0;
}

/* Param names of the last request, by position. A web server sends the same names in the
 * same order for every request, so the name objects (and their cached hashes) are reused:
 * no allocation and no hashing per name. Only names up to NAME_CACHE_MAX_LEN bytes are kept. */
#define NAME_CACHE_SIZE 64
#define NAME_CACHE_MAX_LEN 64
static PyObject *name_cache[NAME_CACHE_SIZE];

static PyObject *
head_name(const unsigned char *p, Py_ssize_t len, Py_ssize_t index)
{
    if (index >= NAME_CACHE_SIZE || len > NAME_CACHE_MAX_LEN)
        return PyBytes_FromStringAndSize((const char *)p, len);
    PyObject *cached = name_cache[index];
    if (cached != NULL && PyBytes_GET_SIZE(cached) == len &&
        memcmp(PyBytes_AS_STRING(cached), p, len) == 0) {
        Py_INCREF(cached);
        return cached;
    }
    PyObject *name = PyBytes_FromStringAndSize((const char *)p, len);
    if (name == NULL)
        return NULL;
    if (PyObject_Hash(name) == -1) { /* cannot fail for bytes; keeps the cache simple */
        Py_DECREF(name);
        return NULL;
    }
    Py_INCREF(name);
    Py_XSETREF(name_cache[index], name);
    return name;
}

/* Decode pairs into dict d (a later name wins). 1 done, 0 malformed or too many, -1 error. */
static int
head_pairs(const unsigned char *buf, Py_ssize_t end, Py_ssize_t max_pairs, PyObject *d)
{
    Py_ssize_t pos = 0, count = 0;
    while (pos < end) {
        Py_ssize_t nlen, vlen;
        if (count >= max_pairs)
            return 0;
        if (head_length(buf, &pos, end, &nlen) < 0 || head_length(buf, &pos, end, &vlen) < 0)
            return 0;
        if (nlen > end - pos || vlen > end - pos - nlen)
            return 0;
        PyObject *name = head_name(buf + pos, nlen, count);
        if (name == NULL)
            return -1;
        PyObject *value = PyBytes_FromStringAndSize((const char *)buf + pos + nlen, vlen);
        if (value == NULL) {
            Py_DECREF(name);
            return -1;
        }
        int rc = PyDict_SetItem(d, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (rc < 0)
            return -1;
        pos += nlen + vlen;
        count++;
    }
    return 1;
}

#define REC_BEGIN_REQUEST 1
#define REC_PARAMS 4
#define REC_STDIN 5

static PyObject *
parse_request_head(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t max_params_bytes, max_pairs;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &max_params_bytes, &max_pairs))
        return NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    Py_ssize_t end = view.len, pos, size = 0, first = -1, first_len = 0, nchunks = 0;
    PyObject *result = NULL, *params = NULL;
    unsigned char *joined = NULL;
    if (end < 24 || buf[0] != 1 || buf[1] != REC_BEGIN_REQUEST || buf[4] != 0 || buf[5] != 8)
        goto none;
    unsigned int request_id = ((unsigned int)buf[2] << 8) | buf[3];
    if (request_id == 0)
        goto none;
    unsigned int role = ((unsigned int)buf[8] << 8) | buf[9];
    unsigned int flags = buf[10];
    pos = 16 + buf[6];
    /* First pass: check the PARAMS run and measure it. */
    for (;;) {
        if (pos + 8 > end)
            goto none;
        const unsigned char *h = buf + pos;
        if (h[0] != 1 || h[1] != REC_PARAMS || (((unsigned int)h[2] << 8) | h[3]) != request_id)
            goto none;
        Py_ssize_t clen = ((Py_ssize_t)h[4] << 8) | h[5];
        Py_ssize_t start = pos + 8;
        pos = start + clen + h[6];
        if (pos > end)
            goto none;
        if (clen == 0)
            break;
        size += clen;
        if (size > max_params_bytes)
            goto none;
        if (first < 0) {
            first = start;
            first_len = clen;
        }
        nchunks++;
    }
    Py_ssize_t params_end = pos;
    params = PyDict_New();
    if (params == NULL)
        goto fail;
    int rc;
    if (nchunks <= 1) {
        rc = head_pairs(first < 0 ? buf : buf + first, first < 0 ? 0 : first_len, max_pairs,
                        params);
    }
    else {
        /* Pairs may span records: join the contents, as the record-by-record path does. */
        joined = PyMem_Malloc(size);
        if (joined == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        Py_ssize_t at = 0, p = 16 + buf[6];
        while (p < params_end) {
            const unsigned char *h = buf + p;
            Py_ssize_t clen = ((Py_ssize_t)h[4] << 8) | h[5];
            memcpy(joined + at, h + 8, clen);
            at += clen;
            p += 8 + clen + h[6];
        }
        rc = head_pairs(joined, size, max_pairs, params);
    }
    if (rc < 0)
        goto fail;
    if (rc == 0)
        goto none;
    int stdin_ended = 0;
    if (pos + 8 <= end) {
        const unsigned char *h = buf + pos;
        if (h[0] == 1 && h[1] == REC_STDIN && (((unsigned int)h[2] << 8) | h[3]) == request_id &&
            h[4] == 0 && h[5] == 0 && pos + 8 + h[6] <= end) {
            pos += 8 + h[6];
            stdin_ended = 1;
        }
    }
    result = Py_BuildValue("IIIOnO", request_id, role, flags, params, pos,
                           stdin_ended ? Py_True : Py_False);
    goto done;
none:
    result = Py_None;
    Py_INCREF(result);
    goto done;
fail:
    result = NULL;
done:
    PyMem_Free(joined);
    Py_XDECREF(params);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"decode_pairs", decode_pairs, METH_VARARGS, "Decode FastCGI name-value pairs."},
    {"parse_request_head", parse_request_head, METH_VARARGS,
     "Parse BEGIN_REQUEST, PARAMS and an empty STDIN at once, or return None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "Optional C accelerator for fcgi_async.protocol.", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
