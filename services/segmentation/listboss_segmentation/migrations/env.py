"""Alembic's entry point for the segmentation schema; the work is in listboss_common.migrations."""

from alembic import context

from listboss_common.migrations import run_environment
from listboss_segmentation.schema import ALEMBIC

run_environment(context, ALEMBIC)
