"""``python -m tasks.classification fit|validate|test|predict``: the task declared in ``task.py``."""

from tasks.classification.task import TASK

if __name__ == "__main__":
    TASK.main()
