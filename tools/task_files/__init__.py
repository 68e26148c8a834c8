"""Built-in task files: real objectives written in the task-file form a user writes their own in."""
