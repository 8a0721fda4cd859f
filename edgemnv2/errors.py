"""User-facing errors: anything the user can fix becomes one line on the terminal, not a traceback."""


class UserError(Exception):
    """A mistake in the user's input (file, option, data). The CLI prints it as one line and exits 1."""


def did_you_mean(name: str, valid: list[str] | tuple[str, ...], what: str) -> UserError:
    """An error for an unknown name that lists the valid ones and the closest match."""
    import difflib

    close = difflib.get_close_matches(name, list(valid), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UserError(f"unknown {what} '{name}'.{hint} Valid: {', '.join(valid)}")
