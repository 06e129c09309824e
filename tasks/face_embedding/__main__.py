"""``python -m tasks.face_embedding fit|validate|test|predict|index``: the task declared in ``task.py``."""

from tasks.face_embedding.task import TASK

if __name__ == "__main__":
    TASK.main()
