#!/usr/bin/env python3
"""Atomic read-modify-write instructions per unit of work, from a callgrind profile.

    scripts/locked.py BINARY PROFILE UNITS [TOP]

PROFILE is a callgrind output made with --dump-instr=yes (scripts/callgrind.sh does this with
STRAIT_CG_LOCKS=1). Every `lock`-prefixed instruction of BINARY, and every `xchg` with memory
(locked without the prefix), is a full barrier that costs ~5-6 ns on this host on top of the
work it does, however uncontended: instruction counts do not show it. Prints their executions
per unit, then the TOP functions (default 15) that execute them. Only BINARY's own code counts
(shared libraries' atomics are left out). Needs objdump.
"""

import collections
import re
import subprocess
import sys


def locked_addresses(binary):
    listing = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", binary], capture_output=True, text=True, check=True
    ).stdout
    pattern = re.compile(r"^\s*([0-9a-f]+):\s+(lock |xchg\s+%\w+,.*\(|xchg\s+\S*\()")
    return {int(m.group(1), 16) for m in map(pattern.match, listing.splitlines()) if m}


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    binary, profile, units = sys.argv[1], sys.argv[2], int(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 15
    locked = locked_addresses(binary)
    objects, functions = {}, {}

    def named(table, spec):
        # "(id) name" defines an id, "(id)" refers to one.
        m = re.match(r"\((\d+)\)(?: (.*))?", spec)
        if m.group(2):
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), "")

    obj = fn = ""
    address = 0
    after_call = False
    per_function = collections.Counter()
    mine = binary.rsplit("/", 1)[-1]
    with open(profile) as lines:
        for line in lines:
            if line.startswith("ob="):
                obj = named(objects, line[3:].strip())
            elif line.startswith("fn="):
                fn = named(functions, line[3:].strip())
            elif line.startswith("cob="):
                named(objects, line[4:].strip())
            elif line.startswith("cfn="):
                named(functions, line[4:].strip())
            elif line.startswith("calls="):
                # The next cost line is the call's inclusive cost, not this instruction's.
                after_call = True
            elif line[:1] in "0123456789+-*":
                fields = line.split()
                position = fields[0]
                if position.startswith("0x"):
                    address = int(position, 16)
                elif position[0] in "+-":
                    address += int(position)
                if after_call:
                    after_call = False
                elif obj.endswith(mine) and address in locked and len(fields) >= 3:
                    per_function[fn] += int(fields[2])
    total = sum(per_function.values())
    print(f"locked instructions per unit: {total / units:.1f}")
    for function, count in per_function.most_common(top):
        print(f"  {count / units:6.2f}  {function[:140]}")


if __name__ == "__main__":
    main()
