"""Pre-submission check (grows into the full check: README, "Submitting"). For now: the script rules the graded
shell scripts must obey (hw1_download_ckpt.sh, hw1_1.sh, hw1_2.sh).
"""
import shlex
from typing import List

GRADED_SCRIPTS = ("hw1_download_ckpt.sh", "hw1_1.sh", "hw1_2.sh")
FORBIDDEN_COMMANDS = ("rm", "cp", "mv", "mkdir", "cd", "pip", "pip3", "sudo", "CUDA_VISIBLE_DEVICES")


# ---------------------------------------------------------------------------------------------- script rules

def shell_words(text: str) -> List[str]:
    """The shell words of ``text`` outside comments, split at pipes, ``;``, ``&&`` and ``$( )``."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def script_violations(text: str) -> List[str]:
    """Forbidden commands among a script's words (also inside ``VAR=value`` and ``/usr/bin/cmd``), and a bare
    ``python`` (the scripts must call ``python3``); comments do not count."""
    parts = {part for word in shell_words(text) for piece in word.split("=") for part in piece.split("/")}
    return sorted(set(FORBIDDEN_COMMANDS) & parts) + (["python"] if "python" in parts else [])
