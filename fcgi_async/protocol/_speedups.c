/* Optional accelerator for the protocol hot path: name-value pair decoding (spec 3.4).
 *
 * Mirrors fcgi_async.protocol.records._decode_pairs_py exactly, error messages included;
 * the pure-Python function stays the reference and the same tests run against both.
 * decode_pairs(data: bytes, max_pairs: int, error: type) -> list[tuple[bytes, bytes]]
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

static PyMethodDef methods[] = {
    {"decode_pairs", decode_pairs, METH_VARARGS, "Decode FastCGI name-value pairs."},
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
