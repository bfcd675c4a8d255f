"""``unimedvl chat``: a multi-turn conversation about images in the terminal (stdin line by line)."""

from __future__ import annotations

import sys
import warnings

from unimedvl.commands.inference import (
    emit,
    inference_parser,
    load_model,
    text_options,
    thought_out,
    warn_once,
)
from unimedvl.errors import DataError, UserError

CHAT_HELP = "commands: /image PATH, /think on|off, /reset, /quit; any other line is a question"


def register(subparsers) -> None:
    """Add the ``chat`` subcommand."""
    p = inference_parser(subparsers, "chat", "multi-turn conversation about images in the terminal")
    p.add_argument("--think", action="store_true", help="start with thinking mode on")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (with --temperature > 0)")
    text_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``unimedvl chat``; the exit status."""
    model = load_model(args)
    session = model.chat(think=args.think)
    session.attach_hint = "/image PATH"
    interactive = sys.stdin.isatty()
    if interactive:
        print(CHAT_HELP, file=sys.stderr)
    turn = 0
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            return 0
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                command, _, rest = line.partition(" ")
                rest = rest.strip()
                if command == "/quit":
                    return 0
                if command == "/reset":
                    session.reset()
                    print("(conversation reset)", file=sys.stderr)
                elif command == "/image":
                    if not rest:
                        raise DataError("/image needs a path: /image scan.dcm")
                    session.attach(rest)
                    print(f"(attached {rest})", file=sys.stderr)
                elif command == "/think":
                    if rest not in ("on", "off"):
                        raise DataError("/think takes on or off")
                    session.think = rest == "on"
                    print(f"(thinking {rest})", file=sys.stderr)
                else:
                    print(f"unknown command {command}; {CHAT_HELP}", file=sys.stderr)
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                answer = session.ask(
                    line,
                    max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature,
                    top_p=args.top_p,
                    seed=args.seed + turn,
                )
            for notice in caught:
                warn_once(str(notice.message))
            turn += 1
            text, thinking = (answer.text, answer.thinking) if session.think else (answer, None)
            plain = thought_out(thinking, text) if session.think else text
            emit(args, {"question": line, "answer": text, "thinking": thinking}, plain)
        except UserError as err:  # a bad path or command ends the turn, not the session
            print(f"error: {err}", file=sys.stderr)
