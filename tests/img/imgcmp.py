#!/usr/bin/python3
"""Compare diskserve-img output with qemu-img output for the same image.

    imgcmp.py check OURS.txt QEMU.txt    check reports: repaired counts,
                                         errors, leaks, internal errors,
                                         allocation line, image end
    imgcmp.py repair OURS.txt QEMU.txt   the same but for the image end,
                                         which depends on how a repair
                                         placed new structures
    imgcmp.py info OURS.json QEMU.json   info --output=json on the keys
                                         both have
    imgcmp.py map OURS.json QEMU.json    map --output=json, every field

Exits 0 when they agree, 1 (with the differences on stderr) when not.
"""
import json
import re
import sys

CHECK_PATTERNS = {
    'repaired': r'were found and repaired:\s+(\d+) leaked clusters\s+'
                r'(\d+) corruptions',
    'clean': r'(No errors were found on the image\.)',
    'errors': r'(\d+) errors were found on the image',
    'leaks': r'(\d+) leaked clusters were found on the image',
    'internal': r'(\d+) internal errors have occurred',
    'allocation': r'(\d+/\d+ = [\d.]+% allocated, [\d.]+% fragmented, '
                  r'[\d.]+% compressed clusters)',
    'end': r'Image end offset: (\d+)',
}

INFO_KEYS = ['virtual-size', 'filename', 'cluster-size', 'format',
             'actual-size', 'dirty-flag', 'backing-filename',
             'full-backing-filename', 'backing-filename-format',
             'encrypted']
INFO_DATA_KEYS = ['compat', 'lazy-refcounts', 'refcount-bits', 'corrupt',
                  'extended-l2', 'compression-type', 'data-file',
                  'data-file-raw']
SNAPSHOT_KEYS = ['id', 'name', 'vm-state-size', 'date-sec', 'date-nsec',
                 'vm-clock-sec', 'vm-clock-nsec', 'icount']


def parse_check(text):
    out = {}
    for key, pat in CHECK_PATTERNS.items():
        m = re.search(pat, text)
        out[key] = m.groups() if m else None
    return out


def cmp_check(ours, qemu, skip=()):
    a = parse_check(open(ours).read())
    b = parse_check(open(qemu).read())
    for k in skip:
        del a[k], b[k]
    bad = [k for k in a if a[k] != b[k]]
    for k in bad:
        print('check %s: ours %r, qemu %r' % (k, a[k], b[k]),
              file=sys.stderr)
    return not bad


def info_view(d):
    v = {k: d.get(k) for k in INFO_KEYS}
    fs = d.get('format-specific')
    if fs:
        v['type'] = fs.get('type')
        data = fs.get('data', {})
        for k in INFO_DATA_KEYS:
            v['data.' + k] = data.get(k)
        v['data.encrypt.format'] = data.get('encrypt', {}).get('format')
    for i, sn in enumerate(d.get('snapshots', [])):
        for k in SNAPSHOT_KEYS:
            v['snapshot%d.%s' % (i, k)] = sn.get(k)
    return v


def cmp_info(ours, qemu):
    a = info_view(json.load(open(ours)))
    b = info_view(json.load(open(qemu)))
    bad = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    for k in bad:
        print('info %s: ours %r, qemu %r' % (k, a.get(k), b.get(k)),
              file=sys.stderr)
    return not bad


def cmp_map(ours, qemu):
    a = json.load(open(ours))
    b = json.load(open(qemu))
    if a == b:
        return True
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x != y:
            print('map entry %d: ours %r, qemu %r' % (i, x, y),
                  file=sys.stderr)
            break
    print('map: %d entries ours, %d qemu' % (len(a), len(b)),
          file=sys.stderr)
    return False


def main():
    kind, ours, qemu = sys.argv[1:4]
    ok = {'check': cmp_check, 'info': cmp_info, 'map': cmp_map,
          'repair': lambda a, b: cmp_check(a, b, ('end',))}[kind](ours, qemu)
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
