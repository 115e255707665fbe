#!/usr/bin/python3
"""uncovered.py OLD NEW MAP: print the 512-byte sectors whose contents
differ between raw images OLD and NEW but that no dirty run of MAP
("OFFSET LENGTH" lines) covers, and exit 1 if there is any; print the
number of changed sectors otherwise."""
import bisect
import sys


def main():
    old_path, new_path, map_path = sys.argv[1:4]
    runs = []
    with open(map_path) as m:
        for line in m:
            if line.strip():
                off, length = (int(x) for x in line.split()[:2])
                runs.append((off, off + length))
    starts = [r[0] for r in runs]

    def covered(pos):
        i = bisect.bisect_right(starts, pos) - 1
        return i >= 0 and runs[i][0] <= pos < runs[i][1]

    changed = bad = 0
    chunk = 1 << 20
    with open(old_path, 'rb') as a, open(new_path, 'rb') as b:
        base = 0
        while True:
            x, y = a.read(chunk), b.read(chunk)
            if not x and not y:
                break
            if x != y:
                for s in range(0, max(len(x), len(y)), 512):
                    if x[s:s + 512] != y[s:s + 512]:
                        changed += 1
                        if not covered(base + s):
                            bad += 1
                            if bad <= 10:
                                print('uncovered sector at', base + s)
            base += chunk
    if bad:
        print(bad, 'of', changed, 'changed sectors outside the dirty runs')
        sys.exit(1)
    print(changed)


main()
