"""Tests of the Headless API client (``genie_api``)."""
