//! A synthetic retailer catalog: categories, brands, prices, and products that go together.
//!
//! Each category has a few brands and a price level; product popularity within a category
//! follows a Zipf law. Some categories complement others (pasta and sauce, coffee and milk):
//! every product of such a category has a *partner* product in the complement category, so that
//! shoppers who buy a given pasta tend to buy "the right sauce" with it, which is the affinity the
//! graph's `product_affinities` should find.

use rand::Rng;

/// Categories with their typical unit price in cents and their complement, if any.
const CATEGORIES: &[(&str, i64, Option<&str>)] = &[
    ("pasta", 149, Some("pasta-sauce")),
    ("pasta-sauce", 239, Some("pasta")),
    ("rice", 199, Some("spices")),
    ("spices", 259, None),
    ("coffee", 549, Some("milk")),
    ("tea", 329, Some("biscuits")),
    ("milk", 109, Some("breakfast-cereals")),
    ("breakfast-cereals", 389, Some("milk")),
    ("biscuits", 219, Some("tea")),
    ("bread", 179, Some("cheese")),
    ("cheese", 459, Some("wine")),
    ("wine", 899, Some("cheese")),
    ("beer", 699, Some("crisps")),
    ("crisps", 189, Some("soda")),
    ("soda", 159, Some("crisps")),
    ("yogurt", 259, Some("fruit")),
    ("fruit", 299, None),
    ("vegetables", 249, None),
    ("meat", 1099, Some("vegetables")),
    ("fish", 1299, Some("lemons")),
    ("lemons", 129, None),
    ("chocolate", 249, None),
    ("water", 99, None),
    ("baby-food", 179, Some("diapers")),
    ("diapers", 1599, Some("baby-food")),
    ("pet-food", 899, None),
    ("detergent", 1099, Some("softener")),
    ("softener", 499, Some("detergent")),
    ("shampoo", 399, None),
    ("toothpaste", 229, None),
];

/// Words brands are made of (two per brand).
const BRAND_WORDS: &[&str] = &[
    "alpine", "bella", "casa", "delta", "etoile", "fjord", "golden", "harvest", "iris", "jardin",
    "karma", "lumen", "maison", "nova", "oasis", "prima", "quartz", "riviera", "sierra", "terra",
    "umbra", "valley", "willow", "zenith",
];

/// Adjectives used in product titles.
const TITLE_WORDS: &[&str] = &[
    "organic",
    "classic",
    "family pack",
    "premium",
    "light",
    "extra",
    "original",
    "wholegrain",
    "fresh",
    "mini",
    "large",
    "eco refill",
];

/// One product of the catalog.
#[derive(Clone, Debug)]
pub struct CatalogProduct {
    /// Product id, unique within the retailer.
    pub product_id: String,
    /// Index of its category in the retailer's category list.
    pub category: usize,
    /// Brand name.
    pub brand: String,
    /// Unit price in cents.
    pub unit_price_cents: i64,
    /// A human title (sent as an unknown, tolerated field).
    pub title: String,
    /// The product of the complement category that goes with this one, if any.
    pub partner: Option<usize>,
}

/// One category of the catalog.
#[derive(Clone, Debug)]
pub struct Category {
    /// Category name.
    pub name: &'static str,
    /// Indices of its products, most popular first.
    pub products: Vec<usize>,
    /// Index of the complement category, if any.
    pub complement: Option<usize>,
}

/// A retailer's catalog.
#[derive(Clone, Debug)]
pub struct Catalog {
    /// Retailer id.
    pub retailer_id: String,
    /// Categories.
    pub categories: Vec<Category>,
    /// Products.
    pub products: Vec<CatalogProduct>,
    /// Zipf sampler over a category's products (sized for the largest category).
    pub popularity: Zipf,
    /// Product index by product id.
    pub by_id: std::collections::HashMap<String, usize>,
}

impl Catalog {
    /// A catalog of about `n_products` products for retailer number `r`.
    pub fn generate<R: Rng>(rng: &mut R, r: u32, n_products: u32) -> Catalog {
        let retailer_id = format!("retailer-{r:02}");
        let per_category = (n_products as usize / CATEGORIES.len()).max(2);
        let mut categories: Vec<Category> = CATEGORIES
            .iter()
            .map(|(name, _, _)| Category {
                name,
                products: Vec::new(),
                complement: None,
            })
            .collect();
        for (i, (_, _, complement)) in CATEGORIES.iter().enumerate() {
            categories[i].complement =
                complement.and_then(|c| CATEGORIES.iter().position(|(n, _, _)| *n == c));
        }
        let mut products = Vec::new();
        for (ci, (name, base_price, _)) in CATEGORIES.iter().enumerate() {
            let n_brands = rng.random_range(3..=6);
            let brands: Vec<String> = (0..n_brands)
                .map(|_| {
                    let a = BRAND_WORDS[rng.random_range(0..BRAND_WORDS.len())];
                    let b = BRAND_WORDS[rng.random_range(0..BRAND_WORDS.len())];
                    format!("{a}-{b}")
                })
                .collect();
            for k in 0..per_category {
                let brand = brands[rng.random_range(0..brands.len())].clone();
                // Prices spread around the category's level: x0.5 .. x2.5.
                let factor: f64 = 0.5 + 2.0 * rng.random::<f64>().powi(2);
                let unit_price_cents = ((*base_price as f64) * factor).round() as i64;
                let adjective = TITLE_WORDS[rng.random_range(0..TITLE_WORDS.len())];
                let id = products.len();
                products.push(CatalogProduct {
                    product_id: format!("r{r:02}-{name}-{k:04}"),
                    category: ci,
                    title: format!("{} {adjective} {name} {}", brand.replace('-', " "), k + 1),
                    brand,
                    unit_price_cents,
                    partner: None,
                });
                categories[ci].products.push(id);
            }
        }
        // Partners: each product of a category with a complement gets one product of it,
        // drawn by popularity so that popular pairs emerge.
        let popularity = Zipf::new(per_category, 1.1);
        for i in 0..products.len() {
            if let Some(cc) = categories[products[i].category].complement {
                let pick = categories[cc].products[popularity.sample(rng)];
                products[i].partner = Some(pick);
            }
        }
        let by_id = products
            .iter()
            .enumerate()
            .map(|(i, p)| (p.product_id.clone(), i))
            .collect();
        Catalog {
            retailer_id,
            categories,
            products,
            popularity,
            by_id,
        }
    }

    /// A product of category `c`, drawn by popularity.
    pub fn popular_in<R: Rng>(&self, rng: &mut R, c: usize) -> usize {
        let ps = &self.categories[c].products;
        ps[self.popularity.sample(rng).min(ps.len() - 1)]
    }
}

/// Zipf-distributed ranks `0..n` (rank 0 most likely), by inverse CDF.
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// Ranks `0..n` with weight `1 / (rank + 1)^s`.
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (0..n.max(1))
            .map(|k| {
                acc += 1.0 / ((k + 1) as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    /// One rank.
    pub fn sample<R: Rng>(&self, rng: &mut R) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn zipf_favours_low_ranks() {
        let z = Zipf::new(100, 1.1);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut hist = [0u32; 100];
        for _ in 0..100_000 {
            hist[z.sample(&mut rng)] += 1;
        }
        assert!(hist[0] > hist[1] && hist[1] > hist[9] && hist[9] > hist[99]);
    }

    #[test]
    fn complements_have_partners_in_the_complement_category() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let cat = Catalog::generate(&mut rng, 1, 300);
        let pasta = cat
            .categories
            .iter()
            .position(|c| c.name == "pasta")
            .unwrap();
        let sauce = cat.categories[pasta].complement.unwrap();
        assert_eq!(cat.categories[sauce].name, "pasta-sauce");
        for &p in &cat.categories[pasta].products {
            let partner = cat.products[p].partner.unwrap();
            assert_eq!(cat.products[partner].category, sauce);
        }
    }
}
