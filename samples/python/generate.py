#!/usr/bin/env python3
"""Load a model, stream a story to stdout, print tokens/s to stderr.

    python3 samples/python/generate.py MODEL [PROMPT] [N_TOKENS]
(with the package importable: PYTHONPATH=build/bindings/python, or the wheel installed)
"""
import sys

import starkv


def main() -> int:
    if len(sys.argv) < 2:
        print(f"usage: {sys.argv[0]} MODEL [PROMPT] [N_TOKENS]", file=sys.stderr)
        return 2
    prompt = sys.argv[2] if len(sys.argv) > 2 else "Once upon a time"
    n_tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    try:
        with starkv.Model(sys.argv[1]) as model, model.context() as ctx:
            sys.stdout.write(prompt)
            with ctx.generate(prompt, max_tokens=n_tokens, temperature=0) as story:
                for piece in story:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            sys.stdout.write("\n")
            r = story.result
            print(f"{r.n_prompt_tokens} prompt tokens, {r.n_generated} generated "
                  f"({r.tokens_per_second:.1f} tokens/s), stopped by {r.stop}", file=sys.stderr)
    except starkv.StarkvError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
