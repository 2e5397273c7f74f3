"""`python -m keras_regkit <command>`, also installed as `keras-regkit`."""

import sys

_COMMANDS = {
    "demo": "the overfitting lab: every tool on two moons",
    "docs": "serve (or --build) the documentation site from a checkout",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatches `keras-regkit <command> [options]`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in _COMMANDS:
        listed = "\n".join(
            f"  {name:<6} {what}" for name, what in _COMMANDS.items()
        )
        print(
            "usage: keras-regkit <command> [options]\n\ncommands:\n"
            f"{listed}\n\nRun `keras-regkit <command> --help` for its "
            "options.",
            file=sys.stderr,
        )
        return 2
    if argv[0] == "docs":
        from keras_regkit import _docs

        return _docs.main(argv[1:])
    from keras_regkit import _demo as demo

    return demo.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
