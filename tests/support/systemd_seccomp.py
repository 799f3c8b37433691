#!/usr/bin/python3
"""Runs a command under the seccomp part of a systemd unit's sandbox, as systemd would apply it.

    systemd_seccomp.py UNIT -- COMMAND [ARG...]

Reads the unit's SystemCallFilter=, SystemCallErrorNumber=, RestrictAddressFamilies= and
MemoryDenyWriteExecute= lines, expands the syscall sets with systemd's own `systemd-analyze
syscall-filter` and installs the filter with libseccomp (Debian's python3-seccomp, the library
systemd itself uses), then execs COMMAND. No running systemd is needed, so a test can check that
the service still works inside its unit's filter. The unit's file-system and namespace settings
are not applied here.
"""

import errno
import mmap
import os
import socket
import subprocess
import sys

import seccomp


def unit_settings(path):
    settings = {}
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        settings.setdefault(key, []).append(value)
    return settings


def syscall_sets():
    """Every @set systemd knows, with its members (calls and nested @sets)."""
    text = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager"],
        check=True, capture_output=True, text=True,
    ).stdout
    sets, current = {}, None
    for line in text.splitlines():
        if line.startswith("@"):
            current = sets.setdefault(line.strip(), set())
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.add(line.strip())
    return sets


def expand(names, sets):
    calls = set()
    for name in names:
        if name.startswith("@"):
            calls |= expand(sets[name], sets)
        else:
            calls.add(name)
    return calls


def allowed_calls(filters, sets):
    """systemd's rule: a first list without ~ is an allow list (with @default); each later
    ~list removes from it."""
    allowed = set(expand(["@default"], sets))
    for value in filters:
        deny = value.startswith("~")
        names = value.lstrip("~").split()
        if deny:
            allowed -= expand(names, sets)
        else:
            allowed |= expand(names, sets)
    return allowed


def build_filter(settings):
    error = getattr(errno, settings.get("SystemCallErrorNumber", ["EPERM"])[-1])
    rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(error))
    families = settings.get("RestrictAddressFamilies", [])
    calls = allowed_calls(settings.get("SystemCallFilter", []), syscall_sets())
    if families:
        calls.discard("socket")  # allowed below for the unit's families only
        for name in families[-1].split():
            rules.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, getattr(socket, name)))
    if settings.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes":
        # Mappings may be writable or executable, never both at once.
        both = mmap.PROT_WRITE | mmap.PROT_EXEC
        for call in ("mmap", "mprotect", "pkey_mprotect"):
            calls.discard(call)
            for bits in (0, mmap.PROT_WRITE, mmap.PROT_EXEC):
                rules.add_rule(seccomp.ALLOW, call, seccomp.Arg(2, seccomp.MASKED_EQ, both, bits))
    for call in sorted(calls):
        try:
            rules.add_rule(seccomp.ALLOW, call)
        except (RuntimeError, ValueError, OSError):
            pass  # not a call of this architecture
    return rules


def main():
    if "--" not in sys.argv:
        sys.exit(__doc__)
    split = sys.argv.index("--")
    unit, command = sys.argv[1], sys.argv[split + 1:]
    build_filter(unit_settings(unit)).load()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
