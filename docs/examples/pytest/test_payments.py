import kakashi


def charge(amount):
    kakashi.get_logger("payments").info("charged", amount=amount)


# [test]
def test_charge(kakashi_logs):
    charge(42)
    assert [entry["amount"] for entry in kakashi_logs] == [42]


# [/test]
