"""Bounds the commands put on periods, so a typo cannot start a wait that never ends."""

LONGEST_WAIT_SECONDS = 86_400
"""The longest period a command option takes (a day): ``--wait``, ``--follow``, ``--every``,
``--window`` and the drill's ``--seconds-per-stage``. NaN and infinity are refused too."""
