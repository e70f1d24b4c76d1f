"""Every class of bad rule text named in issue 2 gives a DSLError with line, column and advice."""

import pytest

from optdisco.dsl import DSLError, parse

# (case, text, (line, column), words the message must contain)
CASES = [
    ("unknown name", "def r(w, g, m):\n    m = interp(g, mm, 0.9)\n    return m, m\n",
     (2, 19), ["unknown name 'mm'", "did you mean 'm'"]),
    ("unknown function", "def r(w, g):\n    u = sgn(g)\n    return u\n",
     (2, 9), ["unknown function 'sgn'", "did you mean 'sign'"]),
    ("alias of another library", "def r(w, g):\n    return clamp(g, 1.0)\n",
     (2, 12), ["unknown function 'clamp'", "clip(x, c)"]),
    ("arity", "def r(w, g):\n    return clip(g)\n", (2, 12), ["clip() takes 2 arguments, got 1"]),
    ("arity of randn", "def r(w, g):\n    return randn(g)\n", (2, 12), ["randn() takes 0 arguments, got 1"]),
    ("return lists too few", "def r(w, g, m, v):\n    m = g\n    v = g\n    return m, m\n",
     (4, 5), ["return lists 2 value(s)", "return u, m, v"]),
    ("return omits a state", "def r(w, g, m, v):\n    m = g\n    v = g\n    return m, m, m\n",
     (4, 18), ["return must list state 'v'"]),
    ("return nothing", "def r(w, g):\n    return\n", (2, 5), ["return needs the update"]),
    ("state never updated", "def r(w, g, m):\n    return g, m\n", (1, 13), ["state 'm' is never updated"]),
    ("duplicate parameter", "def r(w, g, m, *, m=0.9):\n    m = g\n    return g, m\n",
     (1, 19), ["duplicate parameter 'm'"]),
    ("non-float default", "def r(w, g, *, beta='0.9'):\n    return g\n",
     (1, 21), ["default of hyperparameter 'beta' must be a float literal"]),
    ("expression default", "def r(w, g, *, beta=1.0 - 0.1):\n    return g\n",
     (1, 21), ["must be a float literal"]),
    ("missing default", "def r(w, g, *, beta):\n    return g\n", (1, 16), ["'beta' needs a float default"]),
    ("bool default", "def r(w, g, *, beta=True):\n    return g\n", (1, 21), ["must be a float literal"]),
    ("for loop", "def r(w, g):\n    for i in range(3):\n        g = g * 2.0\n    return g\n",
     (2, 5), ["loops are not allowed"]),
    ("while loop", "def r(w, g):\n    while g:\n        pass\n    return g\n", (2, 5), ["loops are not allowed"]),
    ("if", "def r(w, g):\n    if g > 0:\n        g = -g\n    return g\n", (2, 5), ["'if' is not allowed", "where"]),
    ("conditional expression", "def r(w, g):\n    return g if w else w\n", (2, 12), ["where(c, a, b)"]),
    ("attribute call", "def r(w, g):\n    u = torch.sign(g)\n    return u\n", (2, 9), ["attributes are not allowed"]),
    ("attribute value", "def r(w, g):\n    u = g.data\n    return u\n", (2, 9), ["attributes are not allowed"]),
    ("subscript", "def r(w, g):\n    u = g[0]\n    return u\n", (2, 9), ["subscripts are not allowed"]),
    ("slice", "def r(w, g):\n    u = g[0:2]\n    return u\n", (2, 9), ["subscripts are not allowed"]),
    ("import before", "import torch\ndef r(w, g):\n    return g\n", (1, 1), ["imports are not allowed"]),
    ("import inside", "def r(w, g):\n    import os\n    return g\n", (2, 5), ["imports are not allowed"]),
    ("from import", "def r(w, g):\n    from os import path\n    return g\n", (2, 5), ["imports are not allowed"]),
    ("lambda", "def r(w, g):\n    f = lambda x: x\n    return g\n", (2, 9), ["lambdas are not allowed"]),
    ("string", "def r(w, g):\n    u = 'g'\n    return g\n", (2, 9), ["strings are not allowed"]),
    ("f-string", "def r(w, g):\n    u = f'{g}'\n    return g\n", (2, 9), ["strings are not allowed"]),
    ("stray string statement", "def r(w, g):\n    u = g\n    'note'\n    return u\n", (3, 5), ["strings are not allowed"]),
    ("walrus", "def r(w, g):\n    u = (x := g) * 2.0\n    return u\n", (2, 10), ["walrus"]),
    ("syntax error", "def r(w, g):\n    u = g +\n    return u\n", (2, 12), ["syntax error"]),
    ("comparison", "def r(w, g):\n    return g > w\n", (2, 12), ["gt(a, b)"]),
    ("boolean operator", "def r(w, g):\n    return g and w\n", (2, 12), ["'and'/'or' are not allowed"]),
    ("not", "def r(w, g):\n    return not g\n", (2, 12), ["'not' and '~' are not allowed"]),
    ("keyword argument", "def r(w, g):\n    return clip(g, c=1.0)\n", (2, 20), ["keyword arguments are not allowed"]),
    ("starred argument", "def r(w, g):\n    return maximum(*g)\n", (2, 20), ["starred arguments are not allowed"]),
    ("assign to the gradient", "def r(w, g):\n    g = g * 2.0\n    return g\n", (2, 5), ["cannot assign to 'g'"]),
    ("assign to a hyperparameter", "def r(w, g, *, beta=0.9):\n    beta = 0.5\n    return g\n",
     (2, 5), ["cannot assign to 'beta'", "hyperparameter"]),
    ("assign to lr", "def r(w, g):\n    lr = 0.5\n    return g\n", (2, 5), ["cannot assign to 'lr'"]),
    ("function used as a value", "def r(w, g):\n    return sign\n", (2, 12), ["'sign' is a function: call it"]),
    ("value called", "def r(w, g):\n    return g(w)\n", (2, 12), ["'g' is a value, not a function"]),
    ("two functions", "def r(w, g):\n    return g\ndef s(w, g):\n    return g\n", (3, 1),
     ["only one function definition"]),
    ("no return", "def r(w, g):\n    u = g\n", (1, 1), ["no return statement"]),
    ("statement after return", "def r(w, g):\n    return g\n    u = g\n", (3, 5), ["after return"]),
    ("w and g out of order", "def r(g, w):\n    return g\n", (1, 7), ["must be named 'w'"]),
    ("missing g", "def r(w):\n    return w\n", (1, 1), ["missing positional parameter 'g'"]),
    ("tuple unpacking", "def r(w, g):\n    a, b = g, w\n    return a\n", (2, 5), ["tuple unpacking"]),
    ("chained assignment", "def r(w, g):\n    a = b = g\n    return a\n", (2, 5), ["chained assignment"]),
    ("empty text", "", (1, 1), ["empty rule text"]),
    ("not a function", "x = 1.0\n", (1, 1), ["exactly one function definition"]),
    ("*args", "def r(w, g, *states):\n    return g\n", (1, 14), ["*args is not allowed"]),
    ("**kwargs", "def r(w, g, **hyper):\n    return g\n", (1, 15), ["**kwargs is not allowed"]),
    ("positional default", "def r(w, g, m=0.0):\n    m = g\n    return g, m\n", (1, 15), ["take no default"]),
    ("decorator", "@jit\ndef r(w, g):\n    return g\n", (1, 2), ["decorators are not allowed"]),
    ("annotation", "def r(w: float, g):\n    return g\n", (1, 10), ["type annotations are not allowed"]),
    ("return annotation", "def r(w, g) -> float:\n    return g\n", (1, 16), ["return annotations"]),
    ("async def", "async def r(w, g):\n    return g\n", (1, 1), ["async functions are not rules"]),
    ("bool literal", "def r(w, g):\n    return g * True\n", (2, 16), ["True is not a number"]),
    ("None literal", "def r(w, g):\n    return g * None\n", (2, 16), ["None is not a number"]),
    ("complex literal", "def r(w, g):\n    return g * 1j\n", (2, 16), ["complex numbers are not allowed"]),
    ("infinite literal", "def r(w, g):\n    return g * 1e999\n", (2, 16), ["finite"]),
    ("matrix product", "def r(w, g):\n    return g @ w\n", (2, 12), ["MatMult", "orthogonalize"]),
    ("floor division", "def r(w, g):\n    return g // w\n", (2, 12), ["floor division"]),
    ("modulo augmented", "def r(w, g):\n    u = g\n    u %= w\n    return u\n", (3, 5), ["augmented assignment"]),
    ("list", "def r(w, g):\n    return [g]\n", (2, 12), ["lists are not allowed"]),
    ("dict", "def r(w, g):\n    return {1.0: g}\n", (2, 12), ["dicts are not allowed"]),
    ("comprehension", "def r(w, g):\n    return [x for x in g]\n", (2, 12), ["comprehensions"]),
    ("used before assignment", "def r(w, g):\n    u = t + g\n    t = g\n    return u\n", (2, 9), ["unknown name 't'"]),
    ("augmented before assignment", "def r(w, g):\n    t += g\n    return t\n", (2, 5), ["used before it is assigned"]),
    ("read-only name as parameter", "def r(w, g, step):\n    step = g\n    return g, step\n", (1, 13), ["read-only"]),
    ("built-in as parameter", "def r(w, g, sign):\n    sign = g\n    return g, sign\n", (1, 13), ["built-in function"]),
    ("global", "def r(w, g):\n    global x\n    return g\n", (2, 5), ["'global' is not allowed"]),
    ("try", "def r(w, g):\n    try:\n        u = g\n    except E:\n        u = w\n    return u\n", (2, 5), ["'try'"]),
    ("with", "def r(w, g):\n    with ctx:\n        u = g\n    return u\n", (2, 5), ["'with'"]),
    ("nested def", "def r(w, g):\n    def f(x):\n        return x\n    return g\n", (2, 5), ["nested functions"]),
    ("yield", "def r(w, g):\n    u = yield g\n    return u\n", (2, 9), ["'yield'"]),
    ("class", "class R:\n    pass\n", (1, 1), ["exactly one function definition", "classes"]),
    ("null byte", "def r(w, g):\n    return g\x00\n", (2, 13), ["null bytes"]),
    ("too deeply nested calls", "def r(w, g):\n    return " + "abs(" * 100 + "g" + ")" * 100 + "\n",
     (2, 272), ["nested too deeply"]),
    ("too many parentheses", "def r(w, g):\n    return " + "(" * 300 + "g" + ")" * 300 + "\n",
     (2, None), ["syntax error"]),
]


@pytest.mark.parametrize("case,text,where,words", CASES, ids=[c[0] for c in CASES])
def test_error_names_line_column_and_problem(case, text, where, words):
    with pytest.raises(DSLError) as info:
        parse(text)
    err = info.value
    line, col = where
    assert err.line == line, str(err)
    assert err.col is not None and err.col >= 1, str(err)
    if col is not None:
        assert err.col == col, str(err)
    assert str(err).startswith(f"line {err.line}, column {err.col}: "), str(err)
    for word in words:
        assert word in str(err), str(err)


def test_did_you_mean_needs_a_close_name():
    with pytest.raises(DSLError) as info:
        parse("def r(w, g):\n    return zzqx(g)\n")
    assert "did you mean" not in str(info.value) and "unknown function 'zzqx'" in str(info.value)


def test_non_string_input_is_a_type_error():
    with pytest.raises(TypeError):
        parse(b"def r(w, g):\n    return g\n")  # type: ignore[arg-type]


def test_indented_text_is_accepted():
    p = parse("    def r(w, g):\n        return g\n")
    assert p.name == "r"


def test_columns_of_indented_text_count_the_indentation():
    # a rule pasted from a class body is dedented to parse, but columns refer to the text given
    with pytest.raises(DSLError) as info:
        parse("    def r(w, g):\n        return sgn(g)\n")
    assert (info.value.line, info.value.col) == (2, 16)


def test_byte_order_mark_is_accepted():
    assert parse("\ufeffdef r(w, g):\n    return g\n").name == "r"
