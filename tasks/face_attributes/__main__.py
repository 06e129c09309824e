"""``python -m tasks.face_attributes fit|validate|test|predict``: the task declared in ``task.py``."""

from tasks.face_attributes.task import TASK

if __name__ == "__main__":
    TASK.main()
