"""``python -m tasks.detection fit|validate|test|predict``: the task declared in ``task.py``."""

from tasks.detection.task import TASK

if __name__ == "__main__":
    TASK.main()
