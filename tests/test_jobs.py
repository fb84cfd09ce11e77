from ipcond.jobs import read_table


def test_condition_named_none_survives_a_csv_round_trip(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("condition,score\nNone,1.0\nBaseline,\nNA,0.5\n")
    t = read_table(path)
    assert list(t["condition"]) == ["None", "Baseline", "NA"]
    assert t["score"].isna().tolist() == [False, True, False]
