"""`python -m keras_regkit demo ...`, also installed as `keras-regkit demo`."""

import sys

_COMMANDS = {"demo": "the overfitting lab: every tool on two moons"}


def main(argv=None):
    """Dispatches `keras-regkit <command> [options]`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in _COMMANDS:
        listed = "\n".join(
            f"  {name:<6} {what}" for name, what in _COMMANDS.items()
        )
        print(
            "usage: keras-regkit <command> [options]\n\ncommands:\n"
            f"{listed}\n\nRun `keras-regkit demo --help` for its options.",
            file=sys.stderr,
        )
        return 2
    from keras_regkit import _demo as demo

    return demo.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
