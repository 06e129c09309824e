"""``python -m tasks.geolocation partition|fit|validate|test|predict``: the task declared in ``task.py``."""

from tasks.geolocation.task import TASK

if __name__ == "__main__":
    TASK.main()
