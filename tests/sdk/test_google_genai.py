"""The official google-genai Python SDK against the running `business2api` binary, with
`api_version="v1beta"` and with its default (`v1`). To be written with the Gemini dialect.
"""
