import pyarrow as pa
import pytest

from storage import InputError, QueryEngine, ReadOnlyError


@pytest.fixture
def filled(catalog):
    catalog.write_table("corpus", "a", pa.table({"doc_id": ["x", "y"], "text": ["t1", "t2"]}))
    catalog.write_table("corpus", "a", pa.table({"doc_id": ["x", "y", "z"], "text": ["t1", "t2", "t3"]}))
    catalog.write_table("corpus", "b", pa.table({"doc_id": ["q"], "text": ["t9"], "topic": ["Arts"]}))
    catalog.write_table("examples", "e", pa.table({"task": ["t", "t", "u"]}))
    return catalog


def test_views_union_latest_versions_by_name(filled):
    out = QueryEngine(filled).run("select dataset, version, count(*) n from corpus group by all order by 1")
    assert out.to_pylist() == [{"dataset": "a", "version": "v0002", "n": 3},
                               {"dataset": "b", "version": "v0001", "n": 1}]
    topics = QueryEngine(filled).run("select topic from corpus where dataset = 'b'")
    assert topics.column("topic").to_pylist() == ["Arts"]


def test_pins_select_an_older_version(filled):
    out = QueryEngine(filled, {("corpus", "a"): "v0001"}).run("select count(*) n from corpus where dataset='a'")
    assert out.column("n").to_pylist() == [2]


def test_catalog_view_lists_every_version(filled):
    out = QueryEngine(filled).run("select kind, name, version, rows from catalog order by all")
    assert len(out) == 4 and out.column("rows").to_pylist() == [2, 3, 1, 3]


@pytest.mark.parametrize("sql", [
    "drop view corpus", "create table t as select 1", "insert into t values (1)",
    "copy (select 1) to '/tmp/quarry-should-not-exist.csv'", "attach '/tmp/x.db'", "set threads = 1",
    "install httpfs", "pragma version", "delete from corpus",
])
def test_writing_statements_are_refused(filled, sql):
    with pytest.raises(ReadOnlyError, match="read-only"):
        QueryEngine(filled).run(sql)


@pytest.mark.parametrize("sql", [
    "explain analyze create table t as select 1", "explain analyze drop view catalog",
    "EXPLAIN ANALYZE insert into t values (1)", "explain create table t as select 1",
    "explain /* a comment */ analyze drop view corpus", "explain (analyze) create table t as select 1",
])
def test_explain_of_anything_but_a_select_is_refused(filled, sql):
    """EXPLAIN ANALYZE runs its statement: "explain analyze drop view catalog" once dropped the view."""
    engine = QueryEngine(filled)
    con = engine.connect()
    with pytest.raises(ReadOnlyError, match="EXPLAIN is allowed only of a SELECT"):
        engine.relation(sql, con)
    assert con.sql("select count(*) from catalog").fetchall() == [(4,)]  # the views are all still there
    assert "t" not in {r[0] for r in con.sql("show tables").fetchall()}


@pytest.mark.parametrize("sql", ["explain select * from corpus", "explain analyze select count(*) from corpus",
                                 "explain (format json) select 1", "describe corpus", "summarize corpus"])
def test_explain_of_a_select_and_the_inspection_statements_run(filled, sql):
    assert QueryEngine(filled).run(sql).num_rows > 0


def test_select_cannot_reach_the_filesystem(filled):
    with pytest.raises(InputError, match="disabled by configuration|Permission"):
        QueryEngine(filled).run("select * from read_csv('/etc/passwd')")


def test_one_statement_only_and_clear_errors(filled):
    with pytest.raises(InputError, match="exactly one"):
        QueryEngine(filled).run("select 1; select 2")
    with pytest.raises(InputError, match="query failed"):
        QueryEngine(filled).run("select no_such_column from corpus")
    with pytest.raises(InputError, match="cannot parse"):
        QueryEngine(filled).run("selec 1")
