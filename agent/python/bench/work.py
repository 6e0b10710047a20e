"""The views' own CPU work (apps.py), also timed by bench.py to turn ``--view-ms`` into rounds."""


def work(rounds):
    """``rounds`` rounds of plain Python: arithmetic, a small dict and a string, as a view's own
    code spends its CPU."""
    acc = 0
    d = {}
    for i in range(rounds):
        acc = (acc * 31 + i) % 1000003
        d[i & 63] = acc
        if i & 255 == 0:
            acc += len("%d-%d" % (i, acc))
    return acc + len(d)
