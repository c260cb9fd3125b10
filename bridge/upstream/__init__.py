"""What every OpenAI-compatible upstream has in common, whatever the endpoint: error documents
(`error_body`), the errors of replies and streams (`errors`), auth, id and returned headers (`headers`)."""
