"""The segmentation service's Alembic environment: alembic.ini, env.py, versions/ (one revision a
file, numbered), and legacy.py, the pre-Alembic steps kept only to adopt old databases."""
