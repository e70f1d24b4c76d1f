"""Rule texts the kernel tests run (until and besides the catalog)."""

from optdisco.discovered.references import ADAMW_SOURCE as ADAMW  # the one reference AdamW text

LION = '''
def lion(w, g, m, *, beta1=0.9, beta2=0.99, wd=0.0):
    c = interp(g, m, beta1)
    u = sign(c) + wd * w
    m = interp(g, m, beta2)
    return u, m
'''

ADAN = '''
def adan(w, g, m, d, n, gp, *, beta1=0.02, beta2=0.08, beta3=0.01, eps=1e-8, wd=0.0):
    diff = where(step - 1.0, g - gp, 0.0 * g)
    m = interp(g, m, 1.0 - beta1)
    d = interp(diff, d, 1.0 - beta2)
    c = g + (1.0 - beta2) * diff
    n = interp(square(c), n, 1.0 - beta3)
    u = (m + (1.0 - beta2) * d) / (sqrt(n) + eps) + wd * w
    gp = g
    return u, m, d, n, gp
'''

LAMB = '''
def lamb(w, g, m, v, *, beta1=0.9, beta2=0.999, eps=1e-6, wd=0.01):
    m = interp(g, m, beta1)
    v = interp(square(g), v, beta2)
    r = m / (1.0 - beta1 ** step) / (sqrt(v / (1.0 - beta2 ** step)) + eps) + wd * w
    u = norm(w) / (norm(r) + eps) * r
    return u, m, v
'''

MUON = '''
def muon(w, g, m, *, beta=0.95):
    m = interp(g, m, beta)
    u = orthogonalize(interp(g, m, beta))
    return u, m
'''

CENTERED = '''
def centered(w, g, m, *, beta=0.9, eps=1e-8):
    m = interp(g, m, beta)
    c = m - mean(m)
    u = c / (rms(c - row_mean(c)) + eps) + col_mean(g) * 0.1
    return u, m
'''

NOISY = '''
def noisy(w, g, m, *, sigma=0.01, beta=0.9):
    m = interp(g + sigma * randn(), m, beta)
    u = sign(m) + 0.001 * randn() + numel(w) * 0.0
    return u, m
'''

SWAP = '''
def swap(w, g, a, b, *, k=0.5):
    t = a
    a = b + g
    b = t * k + w
    u = t - a + clip(g, 0.1) + maximum(a, b) - minimum(a, 0.5) + relu(b) + tanh(g) + gt(g, a)
    return u, a, b
'''

EXOTIC = '''
def exotic(w, g, s, *, c=2.0, p=1.5):
    s = s + abs(g) + exp(-square(g)) + log(1.0 + abs(g))
    u = rsqrt(s + 1.0) * g + abs(g) ** p / (c + sum(abs(g)) + numel(g)) - 1.0 / (c + abs(w)) + sqrt(s) * 0.01
    return u, s
'''

EDGE = '''
def edge(w, g, a, b):
    a = b
    b = sign(1.5) + step
    u = clip(g, -0.4) + clip(w, 0.3) + a
    return u, a, b
'''

RULES = {"adamw": ADAMW, "lion": LION, "adan": ADAN, "lamb": LAMB, "muon": MUON,
         "centered": CENTERED, "noisy": NOISY, "swap": SWAP, "exotic": EXOTIC, "edge": EDGE}
