"""The results store: what a cell is (records), and cells kept whole, digested and locked (cells)."""
