"""Errors a user can act on.

Every failure the user can fix (a missing modality, a corrupt file, mismatched anatomy) is raised as
:class:`GliomaSuiteError` whose message is one plain sentence naming the file, the problem and the
fix. The command line prints that sentence and exits with status 2; the Slicer module shows it.
"""


class GliomaSuiteError(Exception):
    """A problem with the user's input or request, explained in words the user can act on."""


class StudyError(GliomaSuiteError):
    """The study (the set of MRI volumes of one patient at one time point) cannot be used."""


class CancelledError(GliomaSuiteError):
    """The user cancelled a long-running job; nothing partial was written."""
