"""``python -m l1inf_lightning``: the same as the ``l1inf-lightning`` command."""

from l1inf_lightning.cli import main

if __name__ == "__main__":
    main()
