import sqlite3, sys, collections
db = sqlite3.connect(sys.argv[1])
names = dict(db.execute("select id, value from StringIds"))
rows = db.execute("select start, end, shortName, gridX, gridY, blockX from CUPTI_ACTIVITY_KIND_KERNEL order by start").fetchall()
print("kernels", len(rows))
# find decode steps: sequences starting at k_embed
idx = [i for i, r in enumerate(rows) if names[r[2]] == "k_embed"]
print("k_embed count", len(idx))
# take the last 20 full steps that have ~415 kernels
steps = []
for a, b in zip(idx, idx[1:]):
    if b - a == 415 and rows[b][0] - rows[a][0] < 3.2e6 and any(names[rows[i][2]] == "k_gemv_bf16" and rows[i][3] > 1000 for i in range(a, b)):
        steps.append((a, b))
steps = steps[-30:]
print("steps used", len(steps), "kernels/step", [b - a for a, b in steps[:3]])
dur = collections.defaultdict(float); cnt = collections.defaultdict(int); gap = collections.defaultdict(float)
tot = 0; totgap = 0
for a, b in steps:
    tot += rows[b][0] - rows[a][0]
    for i in range(a, b):
        n = names[rows[i][2]]
        d = rows[i][1] - rows[i][0]
        g = rows[i + 1][0] - rows[i][1]
        dur[n] += d; cnt[n] += 1; gap[n] += g
ns = len(steps)
print("step us %.1f" % (tot / ns / 1e3))
print("%-24s %5s %9s %9s %9s" % ("kernel", "n", "us/step", "us/each", "gap after/each"))
for n in sorted(dur, key=lambda n: -dur[n]):
    print("%-24s %5d %9.1f %9.2f %9.2f" % (n, cnt[n] // ns, dur[n] / ns / 1e3, dur[n] / cnt[n] / 1e3, gap[n] / cnt[n] / 1e3))
print("sum kernel us/step %.1f, sum gaps %.1f" % (sum(dur.values()) / ns / 1e3, sum(gap.values()) / ns / 1e3))
# one layer sequence of the last step
a, b = steps[-1]
for i in range(a, a + 25):
    r = rows[i]
    print("%-22s %6.2f us  gap %6.2f  grid %dx%d" % (names[r[2]], (r[1] - r[0]) / 1e3, (rows[i + 1][0] - r[1]) / 1e3, r[3], r[4]))
