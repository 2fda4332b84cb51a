"""Writes one named section of bench/BENCHMARKS.md, keeping the other sections."""

import datetime
import os
import platform
import re

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "BENCHMARKS.md")
HEADER = ("# kerasft benchmarks\n\nEach section is written by the script it names, from one run on the "
          "machine it states; figures are ratios against a baseline measured in the same run.\n")


def write_section(title, body, note):
    """Replaces (or appends) the `## title` section with `body` and a dated note."""
    text = open(PATH).read() if os.path.exists(PATH) else HEADER
    stamp = f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    section = f"## {title}\n\n{note} ({stamp})\n\n{body}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    with open(PATH, "w") as f:
        f.write(text)
