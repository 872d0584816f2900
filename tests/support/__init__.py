"""Helpers shared by the test suites (model builders and the like); not tests themselves."""
