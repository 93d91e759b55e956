"""The REST API (Django REST framework, schema by drf-spectacular): the pages' services, selectors,
permissions and request form behind token authentication. docs/api.md shows a round trip."""
