"""The command line's errors: exit codes, `UsageError`, and library messages in the command line's spelling."""

import re

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3


class UsageError(ValueError):
    """A flag, a file or a value given on the command line is wrong."""


_EXAMPLE_VALUES = re.compile(r"\b([a-z][a-z_]*)= \(e\.g\. '([^']+)'(?: or '([^']+)')?\)")
_ARGUMENT = re.compile(r"\b([a-z][a-z_]*)=(True|False|None|'[^']*'|\"[^\"]*\"|\([^()]*\)"
                       r"|[^\s,;()]+?(?=\.?(?:\s|$|[,;()])))?")
# A bare argument name: with an underscore (project_name), or the subject of "... must be".
_BARE_NAME = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b|^[a-z]+(?= must be)")
_BACKBONE_NAMES = re.compile(r"kft\.backbones\.names\((?:'(\w+)')?\)")


def cli_spelling(message, parser):
    """Rewrites a library message's Python arguments (`encoding=`, `pretrained=False`) as `parser`'s flags.

    Only the arguments the command has a flag for change; `kft.backbones.names('text')`
    becomes `kerasft backbones --modality text`.

    Args:
        message: str. The error message.
        parser: argparse.ArgumentParser. The subcommand's parser.
    """
    flags = {action.dest: action for action in parser._actions if action.option_strings}

    def flag(name, value=""):
        action = flags[name]
        option = max(action.option_strings, key=len)
        if action.nargs == 0:  # --overwrite, --no-pretrained
            return option if value in ("", str(action.const)) else f"no {option}"
        if value == "None":
            return f"no {option}"
        value = value.strip("'\"")
        if value.startswith("("):
            value = ",".join(part.strip(" '\"") for part in value.strip("()").split(",") if part.strip())
        return f"{option} {value or action.metavar or name.upper()}"

    def example(match):
        name, first, second = match.groups()
        if name not in flags:
            return match.group(0)
        return flag(name, first) + (f" (or {flag(name, second)})" if second else "")

    def argument(match):
        return flag(match.group(1), match.group(2) or "") if match.group(1) in flags else match.group(0)

    def bare(match):  # project_name -> --project-name
        name = match.group(0)
        return max(flags[name].option_strings, key=len) if name in flags else name

    def backbones(match):
        return "`kerasft backbones" + (f" --modality {match.group(1)}`" if match.group(1) else "`")

    message = _EXAMPLE_VALUES.sub(example, message)
    message = _ARGUMENT.sub(argument, message)
    message = _BARE_NAME.sub(bare, message)
    return _BACKBONE_NAMES.sub(backbones, message)
