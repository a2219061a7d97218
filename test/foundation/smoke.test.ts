import t from 'tap';
t.test('arith', async (t) => { t.equal(1 + 1, 2); });
t.test('arith2', async (t) => { t.equal(2 + 2, 4); });
