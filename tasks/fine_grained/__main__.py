"""``python -m tasks.fine_grained fit|validate|test|predict``: the task declared in ``task.py``."""

from tasks.fine_grained.task import TASK

if __name__ == "__main__":
    TASK.main()
