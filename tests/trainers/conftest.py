import pytest

from pipelines.builders.sources import load_embedded_table


@pytest.fixture(scope="session")
def wiki_texts():
    return load_embedded_table("en", 300).column("extract").to_pylist()
