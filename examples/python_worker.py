#!/usr/bin/env python3
"""A line worker for `powerpool map --exec`: the fastest correct read-compute-print loop.

    powerpool map --exec 'python3 examples/python_worker.py' --input data.jsonl --workers 2

The protocol (docs/python.md has it in full):

- powerpool starts this program once per worker and writes it one input line per item on
  stdin (UTF-8 here; any bytes but newline in general), each ending in a newline.
- For each input line, the program writes exactly one line to stdout, in the same order, and
  nothing else: diagnostics go to stderr, which powerpool passes through, prefixed.
- powerpool writes ahead (up to 4096 lines), so the program must flush what it has computed
  before it waits for more input: this loop flushes once per read, not once per line.
- An exception ends the program: powerpool restarts it, retries the lines it had not answered,
  and names the line that keeps failing. So lines answered before the exception are flushed
  first, and only the failing line is blamed.

Replace `compute` with your function (it takes the line without its newline and returns the
result line without one). Run it by hand: `printf '3\\n4\\n' | python3 python_worker.py`.
"""
import json
import os
import sys


def compute(line: str) -> str:
    """The work: a JSON record in, a few statistics of its values out (`x*x` for a number)."""
    if line[:1] == "{":
        record = json.loads(line)
        values = record["values"]
        n = len(values)
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / n
        return f'{record["id"]} {n} {mean:.6g} {var:.6g} {max(values):.6g}'
    x = int(line)
    return str(x * x)


def main() -> None:
    read, out = os.read, sys.stdout.buffer
    rest = b""
    while True:
        chunk = read(0, 1 << 16)
        if not chunk:
            break
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()  # a line not yet complete
        try:
            for line in lines:
                out.write(compute(line.decode()).encode())
                out.write(b"\n")
        finally:
            out.flush()  # answered lines go out even when one line raises
    if rest:
        out.write(compute(rest.decode()).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
