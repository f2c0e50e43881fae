// Strings to dense integer ids for the analyzer (internal to controller/analyzer).
#pragma once

#include "controller/analyzer/checkpoint_codec.hpp"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::analyzer::detail {

// "No id": an interner's miss, an unset name or address.
inline constexpr std::uint32_t kNone = ~std::uint32_t{0};

// Strings to dense integer ids: open addressing over (hash, id) slots, names in a deque
// (stable: views into them survive later interning). One probe run per lookup, usually one
// cache line, instead of a node-based map's pointer chase. Ids of erased names are reused
// (last erased first), so the id space stays as large as the most names ever held at once.
class Interner {
  public:
    std::uint32_t intern(std::string_view text, bool& fresh) {
        if ((live_ + 1) * 4 > slots_.size() * 3) {
            grow();
        }
        const std::uint64_t h = std::hash<std::string_view>{}(text);
        std::size_t i = static_cast<std::size_t>(h) & mask_;
        for (;; i = (i + 1) & mask_) {
            const auto& slot = slots_[i];
            if (slot.id == kNone) {
                break;
            }
            if (slot.hash == h && names_[slot.id] == text) {
                fresh = false;
                return slot.id;
            }
        }
        fresh = true;
        return insert(i, h, text);
    }
    std::uint32_t intern(std::string_view text) {
        bool fresh = false;
        return intern(text, fresh);
    }
    std::uint32_t find(std::string_view text) const {
        if (slots_.empty()) {
            return kNone;
        }
        const std::uint64_t h = std::hash<std::string_view>{}(text);
        for (std::size_t i = static_cast<std::size_t>(h) & mask_;; i = (i + 1) & mask_) {
            const auto& slot = slots_[i];
            if (slot.id == kNone) {
                return kNone;
            }
            if (slot.hash == h && names_[slot.id] == text) {
                return slot.id;
            }
        }
    }
    // Forgets `id` (which must be held); the id is handed out again later.
    void erase(std::uint32_t id) {
        const std::uint64_t h = std::hash<std::string_view>{}(names_[id]);
        std::size_t i = static_cast<std::size_t>(h) & mask_;
        while (slots_[i].id != id) {
            i = (i + 1) & mask_;
        }
        // Backward shift, as in FlatMap: no tombstones.
        std::size_t j = i;
        for (;;) {
            j = (j + 1) & mask_;
            if (slots_[j].id == kNone) {
                break;
            }
            const std::size_t k = static_cast<std::size_t>(slots_[j].hash) & mask_;
            const bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
            if (stays) {
                continue;
            }
            slots_[i] = slots_[j];
            i = j;
        }
        slots_[i] = Slot{};
        std::string().swap(names_[id]);
        used_[id] = false;
        free_ids_.push_back(id);
        --live_;
    }
    std::string_view name(std::uint32_t id) const { return names_[id]; }
    bool holds(std::uint32_t id) const { return id < used_.size() && used_[id]; }
    std::size_t size() const { return names_.size(); } // ids handed out so far (bound of ids)
    std::size_t live() const { return live_; }
    std::size_t memory_bytes() const {
        std::size_t bytes = slots_.capacity() * sizeof(Slot) + names_.size() * sizeof(std::string) +
                            used_.capacity() / 8 + free_ids_.capacity() * sizeof(std::uint32_t);
        for (const auto& name : names_) {
            bytes += name.capacity() > 15 ? name.capacity() + 1 : 0;
        }
        return bytes;
    }

    // Checkpoint: every id's name (empty when free) and the free list in its order, so
    // restored ids, and the ids handed out next, are those the saved engine would use.
    void save(detail::CheckpointWriter& w) const {
        w.u(names_.size());
        for (std::size_t id = 0; id < names_.size(); ++id) {
            w.u(used_[id] ? 1 : 0);
            if (used_[id]) {
                w.str(names_[id]);
            }
        }
        w.u(free_ids_.size());
        for (const auto id : free_ids_) {
            w.u(id);
        }
    }
    bool restore(detail::CheckpointReader& r) {
        const auto n = r.count(1);
        for (std::size_t id = 0; id < n && r.ok(); ++id) {
            const bool used = r.flag();
            names_.emplace_back(used ? r.str() : std::string());
            used_.push_back(used);
            if (used) {
                bool fresh = false;
                if (intern_at(static_cast<std::uint32_t>(id), fresh); !fresh) {
                    r.invalid("a name is interned twice");
                }
            }
        }
        const auto free = r.count(1);
        std::vector<bool> listed(names_.size(), false);
        for (std::size_t k = 0; k < free && r.ok(); ++k) {
            const auto id = r.u32();
            if (id >= names_.size() || used_[id] || listed[id]) {
                r.invalid("bad free id");
                break;
            }
            listed[id] = true;
            free_ids_.push_back(id);
        }
        if (r.ok() && live_ + free_ids_.size() != names_.size()) {
            r.invalid("free ids do not add up");
        }
        return r.ok();
    }

  private:
    struct Slot {
        std::uint64_t hash = 0;
        std::uint32_t id = kNone;
    };
    // A new name into empty slot `i` (out of line: the per-event lookup stays small).
    [[gnu::noinline]] std::uint32_t insert(std::size_t i, std::uint64_t h, std::string_view text) {
        std::uint32_t id = 0;
        if (!free_ids_.empty()) {
            id = free_ids_.back();
            free_ids_.pop_back();
            names_[id] = text;
            used_[id] = true;
        } else {
            id = static_cast<std::uint32_t>(names_.size());
            names_.emplace_back(text);
            used_.push_back(true);
        }
        slots_[i] = Slot{h, id};
        ++live_;
        return id;
    }
    // Restore: indexes names_[id] (already stored) under its own id.
    void intern_at(std::uint32_t id, bool& fresh) {
        if ((live_ + 1) * 4 > slots_.size() * 3) {
            grow();
        }
        const std::uint64_t h = std::hash<std::string_view>{}(names_[id]);
        std::size_t i = static_cast<std::size_t>(h) & mask_;
        for (; slots_[i].id != kNone; i = (i + 1) & mask_) {
            if (slots_[i].hash == h && names_[slots_[i].id] == names_[id]) {
                fresh = false;
                return;
            }
        }
        slots_[i] = Slot{h, id};
        ++live_;
        fresh = true;
    }
    void grow() {
        std::vector<Slot> bigger(slots_.empty() ? 64 : slots_.size() * 2);
        const std::size_t mask = bigger.size() - 1;
        for (const auto& slot : slots_) {
            if (slot.id == kNone) {
                continue;
            }
            std::size_t i = static_cast<std::size_t>(slot.hash) & mask;
            while (bigger[i].id != kNone) {
                i = (i + 1) & mask;
            }
            bigger[i] = slot;
        }
        slots_.swap(bigger);
        mask_ = mask;
    }
    std::vector<Slot> slots_;
    std::size_t mask_ = 0;
    std::deque<std::string> names_;
    std::vector<bool> used_;
    std::vector<std::uint32_t> free_ids_;
    std::size_t live_ = 0;
};

} // namespace bulkhead::analyzer::detail
