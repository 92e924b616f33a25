"""The progress bar of every tool: tqdm, drawing its finished line once.

tqdm draws a bar when an update reaches the total, then again when the bar closes (with the
overall rate instead of the recent one). On a terminal the second drawing overwrites the first;
in a log (a pipe, a file, CI) both stay, so every finished bar showed its last line twice. Here
the update's drawing of the finished bar is skipped and the closing one shows it.
"""

from tqdm import tqdm


class Progress(tqdm):
    """`tqdm` with the same arguments; use it as a context manager (or close it) to see the end."""

    def display(self, msg=None, pos=None):
        # `close` marks the bar disabled before its final drawing, which must go through.
        finished = self.total is not None and self.n >= self.total
        if finished and not self.disable:
            return True
        return super().display(msg=msg, pos=pos)
