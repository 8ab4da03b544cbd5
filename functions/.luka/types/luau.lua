---@meta
-- What Luau (the Lua luka runs) adds to the Lua 5.1 standard library, for lua-language-server (which knows `utf8`
-- and `table.pack`, `table.unpack` and `table.move` only from later Lua versions). Written by `luka types`. Handlers
-- also have `os.time`, `os.date`, `os.clock` and `os.difftime`.

--- Splits `s` at each `separator` (default ",").
---@param s string
---@param separator string?
---@return string[]
function string.split(s, separator) end

--- A table with room for `count` array items, each set to `value`.
---@param count integer
---@param value any?
---@return table
function table.create(count, value) end

--- The index of the first `value` in the array part of `t`, from `init`.
---@param t table
---@param value any
---@param init integer?
---@return integer?
function table.find(t, value, init) end

--- Empties `t`, keeping its capacity.
---@param t table
function table.clear(t) end

--- A shallow copy of `t`.
---@generic T: table
---@param t T
---@return T
function table.clone(t) end

--- Makes `t` read-only.
---@generic T: table
---@param t T
---@return T
function table.freeze(t) end

---@param t table
---@return boolean
function table.isfrozen(t) end

---@param x number
---@param min number
---@param max number
---@return number
function math.clamp(x, min, max) end

---@param x number
---@return number -1, 0 or 1
function math.sign(x) end

---@param x number
---@return number
function math.round(x) end

--- 32-bit integer bit operations.
bit32 = {}

---@param ... integer
---@return integer
function bit32.band(...) end

---@param ... integer
---@return integer
function bit32.bor(...) end

---@param ... integer
---@return integer
function bit32.bxor(...) end

---@param x integer
---@return integer
function bit32.bnot(x) end

---@param x integer
---@param disp integer
---@return integer
function bit32.lshift(x, disp) end

---@param x integer
---@param disp integer
---@return integer
function bit32.rshift(x, disp) end

---@param x integer
---@param disp integer
---@return integer
function bit32.arshift(x, disp) end

---@param x integer
---@param field integer
---@param width integer?
---@return integer
function bit32.extract(x, field, width) end

--- Luau's `buffer` (fixed-size mutable bytes) also exists; see https://luau.org/library#buffer-library.
buffer = {}

--- Packs its arguments into a table, with `n` set to how many there are.
---@return table
function table.pack(...) end

--- The items of `t` from `i` (default 1) to `j` (default `#t`).
---@param t table
---@param i integer?
---@param j integer?
---@return any ...
function table.unpack(t, i, j) end

--- Copies `a1[f]` to `a1[e]` into `a2` (default `a1`) from index `t`; gives `a2`.
---@param a1 table
---@param f integer
---@param e integer
---@param t integer
---@param a2 table?
---@return table
function table.move(a1, f, e, t, a2) end

--- Luau's UTF-8 library, as Lua 5.3's.
utf8 = {}

--- The UTF-8 text of the given code points.
---@param ... integer
---@return string
function utf8.char(...) end

--- Iterates over the code points of `s`: for position, code point in utf8.codes(s).
---@param s string
---@return fun(s: string, i: integer): integer, integer
---@return string
---@return integer
function utf8.codes(s) end

--- The code points of `s` from byte `i` (default 1) to byte `j` (default `i`).
---@param s string
---@param i integer?
---@param j integer?
---@return integer ...
function utf8.codepoint(s, i, j) end

--- How many UTF-8 characters `s` holds from byte `i` to byte `j`; nil and the position of the first invalid byte when
--- it is not UTF-8.
---@param s string
---@param i integer?
---@param j integer?
---@return integer?
---@return integer?
function utf8.len(s, i, j) end

--- The byte position where the `n`-th character (counted from byte `i`) starts.
---@param s string
---@param n integer
---@param i integer?
---@return integer?
function utf8.offset(s, n, i) end
