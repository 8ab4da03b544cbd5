---@meta
-- What Luau (the Lua luka runs) adds to the Lua 5.1 standard library, for lua-language-server. Written by
-- `luka types`. Handlers also have Luau's `utf8` library (as Lua 5.3's), `os.time`, `os.date` and `os.clock`.

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
